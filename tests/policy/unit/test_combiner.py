"""The combiner (policy/combiner.py): calls of one key that wait for its turn are decided together, in arrival
order, each hearing its own outcome; other keys never wait for them."""

from __future__ import annotations

import threading

import pytest

from tollgate.services.policy.combiner import Combiner


def test_calls_waiting_for_a_busy_key_are_decided_in_one_batch_in_arrival_order():
    combiner: Combiner[int, int] = Combiner()
    first_inside, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def decide(items: list[int]) -> list[int]:
        batches.append(list(items))
        if items == [0]:
            first_inside.set()
            release.wait(10)
        return [item * 10 for item in items]

    answers: dict[int, int] = {}

    def call(item: int) -> None:
        answers[item] = combiner.run("hot", item, decide)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert first_inside.wait(10)
    waiting = [threading.Thread(target=call, args=(item,)) for item in range(1, 6)]
    for thread in waiting:
        thread.start()
    while len(combiner._turns["hot"].queue) < 5:  # all five queued behind the first call's turn
        threading.Event().wait(0.001)
    release.set()
    for thread in [first, *waiting]:
        thread.join(10)
    assert batches[0] == [0]
    assert sorted(batches[1]) == [1, 2, 3, 4, 5] and len(batches) == 2
    assert answers == {item: item * 10 for item in range(6)}
    assert combiner._turns == {}  # nothing kept once no call waits


def test_an_outcome_that_is_an_exception_is_raised_to_its_own_caller_only():
    combiner: Combiner[int, int] = Combiner()

    def decide(items: list[int]) -> list[int | Exception]:
        return [ValueError(f"bad {item}") if item < 0 else item for item in items]

    assert combiner.run("k", 3, decide) == 3
    with pytest.raises(ValueError, match="bad -1"):
        combiner.run("k", -1, decide)


def test_a_failed_batch_fails_each_of_its_calls_and_the_next_call_is_decided_anew():
    combiner: Combiner[int, int] = Combiner()
    calls = []

    def decide(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("database gone")
        return items

    with pytest.raises(ConnectionError):
        combiner.run("k", 1, decide)
    assert combiner.run("k", 2, decide) == 2


def test_a_batch_holds_at_most_the_given_number_of_calls():
    combiner: Combiner[int, int] = Combiner(most=2)
    first_inside, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def decide(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if not first_inside.is_set():
            first_inside.set()
            release.wait(10)
        return items

    threads = [threading.Thread(target=combiner.run, args=("k", 0, decide))]
    threads[0].start()
    assert first_inside.wait(10)
    threads += [threading.Thread(target=combiner.run, args=("k", n, decide)) for n in range(1, 6)]
    for thread in threads[1:]:
        thread.start()
    while len(combiner._turns["k"].queue) < 5:
        threading.Event().wait(0.001)
    release.set()
    for thread in threads:
        thread.join(10)
    assert sizes[0] == 1 and sum(sizes) == 6 and max(sizes) == 2
