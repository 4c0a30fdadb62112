// Proves the contract from Node.js: record a batch, read the totals back, resolve a mode.
// Settings come from the environment; exits 0 when every answer matches, 1 on a mismatch,
// 3 when ResolveMode is not implemented by the server yet. Without TOLLGATE_FEATURE it skips ResolveMode.
import { randomUUID } from 'node:crypto';
import { connect, status, timestamp } from './tollgate.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const tenantId = env('TOLLGATE_TENANT');
const metric = process.env.TOLLGATE_METRIC || 'leads.processed';
const client = connect({ usageAddr: env('TOLLGATE_USAGE_ADDR'), policyAddr: env('TOLLGATE_POLICY_ADDR'),
  token: env('TOLLGATE_TOKEN') });
let failures = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures += 1;
};

async function recordAndReadBack() {
  const now = new Date();
  const events = Array.from({ length: 25 }, (_, i) => ({
    event_id: randomUUID(), metric, quantity: String(i + 1), occurred_at: timestamp(now),
    actor_id: `node-user-${i % 2}`, source_service: 'node-smoke', correlation_id: randomUUID(),
    metadata: { fields: { lang: { stringValue: 'javascript' } } },
  }));
  const first = await client.recordEvents(tenantId, events);
  check(first.results.length === 25 && first.results.every((r) => r.verdict === 'VERDICT_ACCEPTED'),
    'RecordEvents accepts a batch of 25 events');
  const again = await client.recordEvents(tenantId, events);
  check(again.results.every((r) => r.verdict === 'VERDICT_DUPLICATE'), 'sending the batch again counts nothing twice');
  const usage = await client.getUsage({
    tenant_id: tenantId, metrics: [metric],
    start_time: timestamp(new Date(now.getTime() - 3600e3)), end_time: timestamp(new Date(now.getTime() + 3600e3)),
  });
  const total = usage.totals.find((t) => t.metric === metric) || { quantity: '0', event_count: '0' };
  check(total.quantity === String((25 * 26) / 2) && total.event_count === '25',
    `GetUsage reads the totals back (quantity ${total.quantity}, events ${total.event_count})`);
}

async function resolve() {
  if (!process.env.TOLLGATE_FEATURE) {
    console.log('skip ResolveMode: TOLLGATE_FEATURE is not set');
    return 0;
  }
  const expected = env('TOLLGATE_EXPECT_MODE');
  try {
    const answer = await client.resolveMode({
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
  client.close();
}
