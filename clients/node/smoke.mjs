// Proves the contract from Node.js: record a batch, read the change in the totals, resolve a mode.
// It compares totals before and after its own batch, so it passes on a tenant that already has usage and can be
// rerun; a concurrent writer of the same tenant and metric would make it fail.
// Settings come from the environment; exits 0 when every answer matches, 1 on a mismatch,
// 3 when ResolveMode is not implemented by the server yet. Without TOLLGATE_FEATURE it skips ResolveMode.
import { randomUUID } from 'node:crypto';
import { createPolicyClient, createUsageClient, status } from './tollgate.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const tenantId = env('TOLLGATE_TENANT');
const metric = process.env.TOLLGATE_METRIC || 'leads.processed';
const token = env('TOLLGATE_TOKEN');
const usage = createUsageClient({ address: env('TOLLGATE_USAGE_ADDR'), token });
const policy = createPolicyClient({ address: env('TOLLGATE_POLICY_ADDR'), token });
const BATCH = 25;
let failures = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures += 1;
};

async function readTotal(range) {
  const answer = await usage.getUsage({ tenant_id: tenantId, metrics: [metric], ...range });
  // A metric without usage in the range is omitted, not zero.
  const total = answer.totals.find((t) => t.metric === metric);
  return { quantity: BigInt(total?.quantity ?? 0), events: BigInt(total?.event_count ?? 0) };
}

async function recordAndReadBack() {
  const now = new Date();
  const range = { start_time: new Date(now.getTime() - 3600e3), end_time: new Date(now.getTime() + 3600e3) };
  const before = await readTotal(range);
  const events = Array.from({ length: BATCH }, (_, i) => ({
    event_id: randomUUID(), metric, quantity: i + 1, occurred_at: now,
    actor_id: `node-user-${i % 2}`, source_service: 'node-smoke', correlation_id: randomUUID(),
    metadata: { lang: 'javascript' },
  }));
  const first = await usage.recordEvents(tenantId, events);
  check(first.results.length === BATCH && first.results.every((r) => r.verdict === 'VERDICT_ACCEPTED'),
    `RecordEvents accepts a batch of ${BATCH} events`);
  const again = await usage.recordEvents(tenantId, events);
  check(again.results.every((r) => r.verdict === 'VERDICT_DUPLICATE'), 'sending the batch again counts nothing twice');
  const after = await readTotal(range);
  const added = { quantity: after.quantity - before.quantity, events: after.events - before.events };
  check(added.quantity === BigInt((BATCH * (BATCH + 1)) / 2) && added.events === BigInt(BATCH),
    `GetUsage reads the batch back (quantity +${added.quantity}, events +${added.events})`);
}

async function resolve() {
  if (!process.env.TOLLGATE_FEATURE) {
    console.log('skip ResolveMode: TOLLGATE_FEATURE is not set');
    return 0;
  }
  const expected = env('TOLLGATE_EXPECT_MODE');
  try {
    const answer = await policy.resolveMode({
      tenant_id: tenantId, user_id: env('TOLLGATE_USER'), feature_id: env('TOLLGATE_FEATURE'),
      requested_mode: 'MODE_UNSPECIFIED',
    });
    check(answer.resolution.effective_mode === expected && Number(answer.policy_version) > 0,
      `ResolveMode answers ${answer.resolution.effective_mode} (expected ${expected}), policy version ${answer.policy_version}`);
  } catch (error) {
    if (error.code === status.UNIMPLEMENTED) {
      console.log('SKIP ResolveMode: the Policy server answers UNIMPLEMENTED');
      return 3;
    }
    throw error;
  }
  return 0;
}

try {
  await recordAndReadBack();
  const resolveCode = await resolve();
  process.exitCode = failures ? 1 : resolveCode;
} catch (error) {
  console.error(`FAIL ${error.code !== undefined ? `gRPC ${error.code}: ` : ''}${error.message}`);
  process.exitCode = 1;
} finally {
  usage.close();
  policy.close();
}
