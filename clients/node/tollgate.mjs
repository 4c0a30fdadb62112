// A small Tollgate client for Node.js, built from proto/ at run time: the contracts are the API.
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const PROTO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../proto');

// google/protobuf/*.proto imports resolve to the well-known types protobufjs ships with.
const definition = protoLoader.loadSync(
  ['tollgate/usage/v1/usage.proto', 'tollgate/policy/v1/policy.proto'],
  { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const packages = grpc.loadPackageDefinition(definition);

/** A Timestamp message for a JavaScript Date. */
export function timestamp(date) {
  const millis = date.getTime();
  return { seconds: String(Math.floor(millis / 1000)), nanos: (millis % 1000) * 1e6 };
}

/** Promise-returning unary calls with the bearer token and a deadline on every call. */
function unary(client, token, deadlineMs) {
  return (method, request) => new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    const deadline = new Date(Date.now() + deadlineMs);
    client[method](request, metadata, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

/** Clients of UsageService and PolicyService for one token. */
export function connect({ usageAddr, policyAddr, token, deadlineMs = 5000 }) {
  const credentials = grpc.credentials.createInsecure();
  const usage = new packages.tollgate.usage.v1.UsageService(usageAddr, credentials);
  const policy = new packages.tollgate.policy.v1.PolicyService(policyAddr, credentials);
  const callUsage = unary(usage, token, deadlineMs);
  const callPolicy = unary(policy, token, deadlineMs);
  return {
    recordEvents: (tenantId, events) => callUsage('RecordEvents', { tenant_id: tenantId, events }),
    getUsage: (request) => callUsage('GetUsage', request),
    resolveMode: (request) => callPolicy('ResolveMode', request),
    close: () => { usage.close(); policy.close(); },
  };
}

export const status = grpc.status;
