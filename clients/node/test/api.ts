// Compiled by `npm run typecheck` (tests/clients/test_node_client.py): the README's calls, typed through the
// package's own name, and the mistakes the types must refuse.
import {
  createPolicyClient,
  createUsageClient,
  credentials,
  status,
  timestamp,
  toDate,
  type Mode,
  type TollgateError,
  type UsageTotal,
} from '@tollgate/client';

const usage = createUsageClient({ address: 'localhost:50051', token: 'tg_x_y', deadlineMs: 2000 });
const policy = createPolicyClient({ address: 'policy.example.com:443', token: 'tg_x_y', credentials: credentials.createSsl() });

export async function useEverything(): Promise<void> {
  const recorded = await usage.recordEvents('acme', [
    {
      event_id: 'order-17/line-1',
      metric: 'leads.processed',
      quantity: 3,
      occurred_at: new Date(),
      source_service: 'checkout',
      correlation_id: 'order-17/line-1',
      metadata: { lang: 'ts', tags: ['a', 1, true, null] },
    },
    { event_id: 'e2', metric: 'leads.processed', quantity: '9007199254740993', occurred_at: timestamp(new Date()), source_service: 'checkout' },
  ]);
  const accepted: boolean = recorded.results.every((r) => r.verdict === 'VERDICT_ACCEPTED');
  const read = await usage.getUsage(
    { tenant_id: 'acme', metrics: ['leads.processed'], start_time: new Date(0), end_time: new Date() },
    { deadlineMs: 500 },
  );
  const totals: UsageTotal[] = read.totals;
  const quantity: bigint = BigInt(totals[0]?.quantity ?? '0');
  const answer = await policy.resolveMode({ tenant_id: 'acme', user_id: 'bob', feature_id: 'lead_scoring' });
  const mode: Mode = answer.resolution.effective_mode;
  const many = await policy.resolveModes({ tenant_id: 'acme', user_id: 'bob', feature_ids: ['a'], requested_mode: 'MODE_SUGGEST' });
  const ranked = await policy.listActiveFeatures(
    { tenant_id: 'acme', user_id: 'bob', window: { seconds: 7 * 86400 } },
    { deadline: new Date(Date.now() + 1000) },
  );
  const when: Date = toDate({ seconds: many.policy_version, nanos: 0 });
  console.log(accepted, quantity, mode, ranked.usage_available, ranked.features[0]?.parts.usage_score, when);
  try {
    await usage.getUsage({ tenant_id: 'acme', start_time: new Date(), end_time: new Date() });
  } catch (error) {
    const failure = error as TollgateError;
    if (failure.code === status.INVALID_ARGUMENT) console.log(failure.details);
  }
  usage.close();
  policy.close();
}

export async function refuseMistakes(): Promise<void> {
  // @ts-expect-error an event needs occurred_at and source_service
  await usage.recordEvents('acme', [{ event_id: 'e', metric: 'm', quantity: 1 }]);
  // @ts-expect-error a quantity is an integer or its decimal string
  await usage.recordEvents('acme', [{ event_id: 'e', metric: 'm', quantity: true, occurred_at: new Date(), source_service: 's' }]);
  // @ts-expect-error modes are the enum's names
  await policy.resolveMode({ tenant_id: 'acme', user_id: 'bob', feature_id: 'f', requested_mode: 'SUGGEST' });
  // @ts-expect-error responses carry int64 as strings
  const n: number = (await usage.getUsage({ tenant_id: 'a', start_time: new Date(), end_time: new Date() })).totals[0].quantity;
  // @ts-expect-error a client needs a token
  createUsageClient({ address: 'localhost:50051' });
  console.log(n);
}
