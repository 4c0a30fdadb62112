// Types of @tollgate/client's public API. Field names are the .proto names (snake_case). Responses carry int64
// values as decimal strings (exact beyond 2^53), enums as their names, and every field, defaults included.
import type { ChannelCredentials, ServiceError, credentials as grpcCredentials, status as grpcStatus } from '@grpc/grpc-js';

/** The deadline a call gets when neither the client nor the call names one. */
export const DEFAULT_DEADLINE_MS: number;
/** gRPC status codes, to compare with `error.code`. */
export const status: typeof grpcStatus;
/** gRPC channel credentials: `credentials.createSsl()` for TLS. */
export const credentials: typeof grpcCredentials;

/** A google.protobuf.Timestamp as responses carry it. */
export interface Timestamp {
  seconds: string;
  nanos: number;
}
/** A Timestamp a request may carry: a Date, or seconds and nanos since the epoch. */
export type TimestampInput = Date | { seconds: string | number; nanos?: number };
/** A google.protobuf.Duration. */
export interface Duration {
  seconds: string | number;
  nanos?: number;
}
/** An int64 in a request: a safe integer or its decimal string. */
export type Int64Input = number | string;
/** An int64 in a response: its decimal string. */
export type Int64 = string;
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The Timestamp message of a Date. */
export function timestamp(date: Date): Timestamp;
/** The Date of a Timestamp message, to the millisecond. */
export function toDate(ts: { seconds: string | number; nanos?: number }): Date;

/** An error of a call: `code` is a gRPC status, `details` the server's message. */
export type TollgateError = ServiceError;

/** Options of a client. */
export interface ClientOptions {
  /** host:port of the service. */
  address: string;
  /** The bearer token sent with every call. */
  token: string;
  /** The deadline of every call, in milliseconds from its start (default DEFAULT_DEADLINE_MS). */
  deadlineMs?: number;
  /** Channel credentials; plaintext when omitted. */
  credentials?: ChannelCredentials;
}
/** Options of one call; they override the client's. */
export interface CallOptions {
  /** This call's deadline in milliseconds from now. */
  deadlineMs?: number;
  /** This call's deadline as an instant; wins over deadlineMs. */
  deadline?: Date;
}

// tollgate.usage.v1

export type Verdict = 'VERDICT_UNSPECIFIED' | 'VERDICT_ACCEPTED' | 'VERDICT_DUPLICATE' | 'VERDICT_CONFLICT' | 'VERDICT_REJECTED';
export type RejectReason =
  | 'REJECT_REASON_UNSPECIFIED'
  | 'REJECT_REASON_MISSING_FIELD'
  | 'REJECT_REASON_UNKNOWN_METRIC'
  | 'REJECT_REASON_NON_POSITIVE_QUANTITY'
  | 'REJECT_REASON_IN_FUTURE'
  | 'REJECT_REASON_TOO_OLD'
  | 'REJECT_REASON_FIELD_TOO_LONG'
  | 'REJECT_REASON_NUL_CHARACTER'
  | 'REJECT_REASON_METADATA_TOO_LARGE'
  | 'REJECT_REASON_EXTERNAL_BILLABLE'
  | 'REJECT_REASON_QUANTITY_TOO_LARGE'
  | 'REJECT_REASON_UNDECLARED_DIMENSION'
  | 'REJECT_REASON_TOO_MANY_DIMENSIONS'
  | 'REJECT_REASON_EMPTY_DIMENSION_VALUE'
  | 'REJECT_REASON_TOO_MANY_DIMENSION_COMBINATIONS';
export type DedupKey = 'DEDUP_KEY_UNSPECIFIED' | 'DEDUP_KEY_EVENT_ID' | 'DEDUP_KEY_IDEMPOTENCY_KEY' | 'DEDUP_KEY_CORRELATION';
export type Classification =
  | 'CLASSIFICATION_UNSPECIFIED'
  | 'CLASSIFICATION_BILLABLE'
  | 'CLASSIFICATION_NON_BILLABLE'
  | 'CLASSIFICATION_INFO';

/** One usage event as a sender reports it (tollgate.usage.v1.UsageEvent). */
export interface UsageEvent {
  event_id: string;
  metric: string;
  quantity: Int64Input;
  occurred_at: TimestampInput;
  source_service: string;
  actor_id?: string;
  correlation_id?: string;
  idempotency_key?: string;
  /** A small JSON object (at most 4 KiB); sent as a google.protobuf.Struct. */
  metadata?: { [key: string]: JsonValue };
  /** Values of the metric's declared dimensions, such as { model: 'gpt-4o', token_type: 'prompt' }: at most 8,
   * each a non-empty string of at most 128 characters. */
  dimensions?: { [dimension: string]: string };
}
/** The verdict on one event of a batch. */
export interface EventResult {
  index: number;
  event_id: string;
  verdict: Verdict;
  reason: RejectReason;
  message: string;
  dedup_key: DedupKey;
  existing_event_id: string;
}
export interface RecordEventsResponse {
  /** One result per event, in the order of the batch. */
  results: EventResult[];
}
export interface GetUsageRequest {
  tenant_id: string;
  /** Empty means every metric; a metric without usage in the range is omitted, not zero. */
  metrics?: string[];
  /** Inclusive start of the range. */
  start_time: TimestampInput;
  /** Exclusive end of the range. */
  end_time: TimestampInput;
  actor_id?: string;
  group_by_actor?: boolean;
  include_tenant_totals?: boolean;
}
export interface UsageTotal {
  metric: string;
  actor_id: string;
  quantity: Int64;
  event_count: Int64;
  classification: Classification;
}
export interface GetUsageResponse {
  /** Ordered by metric then actor. */
  totals: UsageTotal[];
}

/** A client of tollgate.usage.v1.UsageService. */
export interface UsageClient {
  /** Records one tenant's batch of 1 to 1,000 events; a verdict per event, in order. */
  recordEvents(tenantId: string, events: UsageEvent[], options?: CallOptions): Promise<RecordEventsResponse>;
  /** Exact totals per metric over [start_time, end_time). */
  getUsage(request: GetUsageRequest, options?: CallOptions): Promise<GetUsageResponse>;
  /** Closes the channel; calls after it fail. */
  close(): void;
}
export function createUsageClient(options: ClientOptions): UsageClient;

// tollgate.policy.v1

export type Mode =
  | 'MODE_UNSPECIFIED'
  | 'MODE_OFF'
  | 'MODE_OBSERVE'
  | 'MODE_SUGGEST'
  | 'MODE_PROACTIVE'
  | 'MODE_AMBITIOUS'
  | 'MODE_AUTONOMOUS';
export type CapSource =
  | 'CAP_SOURCE_UNSPECIFIED'
  | 'CAP_SOURCE_REQUESTED'
  | 'CAP_SOURCE_ROLE'
  | 'CAP_SOURCE_FEATURE'
  | 'CAP_SOURCE_PLAN'
  | 'CAP_SOURCE_TENANT'
  | 'CAP_SOURCE_QUOTA';

export interface BasisEntry {
  source: CapSource;
  cap: Mode;
  detail: string;
  binding: boolean;
}
export interface Resolution {
  feature_id: string;
  requested_mode: Mode;
  effective_mode: Mode;
  basis: BasisEntry[];
}
export interface ResolveModeRequest {
  tenant_id: string;
  user_id: string;
  feature_id: string;
  /** Omitted or MODE_UNSPECIFIED means the highest mode allowed. */
  requested_mode?: Mode;
  min_policy_version?: Int64Input;
}
export interface ResolveModeResponse {
  resolution: Resolution;
  policy_version: Int64;
}
export interface ResolveModesRequest {
  tenant_id: string;
  user_id: string;
  /** 1 to 500 features; empty means every feature. */
  feature_ids?: string[];
  requested_mode?: Mode;
  min_policy_version?: Int64Input;
}
export interface ResolveModesResponse {
  resolutions: Resolution[];
  policy_version: Int64;
}
export interface ListActiveFeaturesRequest {
  tenant_id: string;
  user_id: string;
  /** How far back usage counts (default 30 days, at most 400 days). */
  window?: Duration;
}
export interface ScoreParts {
  mode_score: number;
  user_quantity: Int64;
  tenant_quantity: Int64;
  usage_score: number;
}
export interface ActiveFeature {
  feature_id: string;
  display_name: string;
  effective_mode: Mode;
  score: number;
  parts: ScoreParts;
}
export interface ListActiveFeaturesResponse {
  /** Best first. */
  features: ActiveFeature[];
  /** False when the ranking fell back to caps alone. */
  usage_available: boolean;
  usage_unavailable_reason: string;
  policy_version: Int64;
}

/** A client of tollgate.policy.v1.PolicyService. */
export interface PolicyClient {
  /** The effective mode of one feature for a user, with its basis. */
  resolveMode(request: ResolveModeRequest, options?: CallOptions): Promise<ResolveModeResponse>;
  /** The effective modes of many features for one user, from one snapshot. */
  resolveModes(request: ResolveModesRequest, options?: CallOptions): Promise<ResolveModesResponse>;
  /** The user's features above MODE_OFF, ranked. */
  listActiveFeatures(request: ListActiveFeaturesRequest, options?: CallOptions): Promise<ListActiveFeaturesResponse>;
  /** Closes the channel; calls after it fail. */
  close(): void;
}
export function createPolicyClient(options: ClientOptions): PolicyClient;
