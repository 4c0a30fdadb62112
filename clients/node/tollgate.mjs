// The Tollgate client for Node.js, built from the .proto contracts at load time: the contracts are the API.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// An installed package carries its own copy (written by `npm pack`'s prepack); a checkout of the repo reads
// proto/ at the root, so the contracts live in one place in git.
const PROTO_ROOT = [path.join(HERE, 'proto'), path.resolve(HERE, '../../proto')].find((dir) =>
  existsSync(path.join(dir, 'tollgate/usage/v1/usage.proto')),
);
if (!PROTO_ROOT) throw new Error(`@tollgate/client: no tollgate .proto files beside ${HERE}`);

// google/protobuf/*.proto imports resolve to the well-known types protobufjs ships with.
const definition = protoLoader.loadSync(
  ['tollgate/usage/v1/usage.proto', 'tollgate/policy/v1/policy.proto'],
  { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const packages = grpc.loadPackageDefinition(definition);

export const DEFAULT_DEADLINE_MS = 5000;
export const status = grpc.status;
export const credentials = grpc.credentials;

/** A Timestamp message for a JavaScript Date. */
export function timestamp(date) {
  const millis = date.getTime();
  const seconds = Math.floor(millis / 1000);
  return { seconds: String(seconds), nanos: (millis - seconds * 1000) * 1e6 };
}

/** The JavaScript Date of a Timestamp message (to the millisecond). */
export function toDate(ts) {
  return new Date(Number(ts.seconds) * 1000 + Math.floor((ts.nanos || 0) / 1e6));
}

const asTimestamp = (value) => (value instanceof Date ? timestamp(value) : value);

// The well-known types load from protobufjs's own descriptors, whose field names are camelCase whatever keepCase
// says; a snake_case key would be dropped and leave the Value empty.
function structValue(value) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(value)) return { listValue: { values: value.map(structValue) } };
  switch (typeof value) {
    case 'string':
      return { stringValue: value };
    case 'number':
      return { numberValue: value };
    case 'boolean':
      return { boolValue: value };
    case 'object':
      return { structValue: struct(value) };
    default:
      throw new TypeError(`metadata values must be JSON, not ${typeof value}`);
  }
}

function struct(object) {
  // As JSON.stringify does, a key whose value is undefined is left out.
  const entries = Object.entries(object).filter(([, value]) => value !== undefined);
  return { fields: Object.fromEntries(entries.map(([key, value]) => [key, structValue(value)])) };
}

// protobufjs would turn a number into a string value and send it; a dimension value is text, so anything else is
// the caller's mistake, refused before the call. Undefined values are left out, as in metadata.
function dimensionValues(object) {
  const entries = Object.entries(object).filter(([, value]) => value !== undefined);
  for (const [name, value] of entries) {
    if (typeof value !== 'string') throw new TypeError(`dimension ${name} must be a string, not ${typeof value}`);
  }
  return Object.fromEntries(entries);
}

function eventToProto(event) {
  const { occurred_at: occurredAt, metadata, dimensions, ...rest } = event;
  return {
    ...rest,
    occurred_at: asTimestamp(occurredAt),
    metadata: metadata === undefined ? undefined : struct(metadata),
    dimensions: dimensions === undefined ? undefined : dimensionValues(dimensions),
  };
}

function rangeToProto(request) {
  return { ...request, start_time: asTimestamp(request.start_time), end_time: asTimestamp(request.end_time) };
}

/** A unary caller that sends the bearer token and a deadline with every call. */
function caller(stub, { token, deadlineMs = DEFAULT_DEADLINE_MS }) {
  if (!token) throw new TypeError('a Tollgate client needs a token');
  return (method, request, options = {}) =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${token}`);
      const deadline = options.deadline ?? new Date(Date.now() + (options.deadlineMs ?? deadlineMs));
      stub[method](request, metadata, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
    });
}

function stubFor(Service, { address, credentials: channelCredentials }) {
  if (!address) throw new TypeError('a Tollgate client needs an address (host:port)');
  return new Service(address, channelCredentials ?? grpc.credentials.createInsecure());
}

/** A client of tollgate.usage.v1.UsageService. */
export function createUsageClient(options) {
  const stub = stubFor(packages.tollgate.usage.v1.UsageService, options);
  const call = caller(stub, options);
  return {
    // async, so a request the client cannot convert rejects like any failed call instead of throwing.
    recordEvents: async (tenantId, events, callOptions) =>
      call('RecordEvents', { tenant_id: tenantId, events: events.map(eventToProto) }, callOptions),
    getUsage: async (request, callOptions) => call('GetUsage', rangeToProto(request), callOptions),
    close: () => stub.close(),
  };
}

/** A client of tollgate.policy.v1.PolicyService. */
export function createPolicyClient(options) {
  const stub = stubFor(packages.tollgate.policy.v1.PolicyService, options);
  const call = caller(stub, options);
  return {
    resolveMode: (request, callOptions) => call('ResolveMode', request, callOptions),
    resolveModes: (request, callOptions) => call('ResolveModes', request, callOptions),
    listActiveFeatures: (request, callOptions) => call('ListActiveFeatures', request, callOptions),
    close: () => stub.close(),
  };
}
