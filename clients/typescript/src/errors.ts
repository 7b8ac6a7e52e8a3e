/**
 * Errors a component throws, classified as ShipSec's SDK classifies them: the engine retries
 * a retryable one (within the node's retry policy) and fails the node at once on the others.
 */

/** Error types retried by default (ShipSec's retryable ones). */
export const RETRYABLE_TYPES: readonly string[] = [
  'NetworkError',
  'RateLimitError',
  'ServiceError',
  'TimeoutError',
  'ResourceUnavailableError',
];

/** Error types never retried by default. */
export const FATAL_TYPES: readonly string[] = [
  'AuthenticationError',
  'NotFoundError',
  'ValidationError',
  'ConfigurationError',
  'PermissionError',
  'ContainerError',
  'HttpError',
];

/** The error type of an attempt whose signal aborted it. */
export const CANCELLED_ERROR = 'CancelledError';

export interface ComponentErrorOptions {
  /** Whether the engine may retry; by default, whether `type` is one of {@link RETRYABLE_TYPES}. */
  retryable?: boolean;
  /** Anything JSON that helps whoever reads the failure. */
  details?: unknown;
  cause?: unknown;
}

/** A failure with a type, its retryability and details. */
export class ComponentError extends Error {
  readonly type: string;
  readonly retryable: boolean;
  readonly details: unknown;

  constructor(type: string, message: string, options: ComponentErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = type;
    this.type = type;
    this.retryable = options.retryable ?? RETRYABLE_TYPES.includes(type);
    this.details = options.details;
  }
}

function typed(type: string) {
  return class extends ComponentError {
    constructor(message: string, options: ComponentErrorOptions = {}) {
      super(type, message, options);
    }
  };
}

export const NetworkError = typed('NetworkError');
export const RateLimitError = typed('RateLimitError');
export const ServiceError = typed('ServiceError');
export const TimeoutError = typed('TimeoutError');
export const ResourceUnavailableError = typed('ResourceUnavailableError');
export const AuthenticationError = typed('AuthenticationError');
export const NotFoundError = typed('NotFoundError');
export const ValidationError = typed('ValidationError');
export const ConfigurationError = typed('ConfigurationError');
export const PermissionError = typed('PermissionError');
export const ContainerError = typed('ContainerError');
export const HttpError = typed('HttpError');

/** How a thrown value is reported: its type, message, retryability and details. */
export interface Failure {
  type: string;
  message: string;
  retryable: boolean;
  details?: unknown;
}

/**
 * Classifies what a component threw. A {@link ComponentError} says it all; another error is
 * classified by its `name` (retryable when ShipSec's SDK retries that name); an abort is a
 * `CancelledError`; anything else an `Error` that is not retried.
 */
export function classify(thrown: unknown, signal?: AbortSignal): Failure {
  if (thrown instanceof ComponentError) {
    return {
      type: thrown.type,
      message: thrown.message,
      retryable: thrown.retryable,
      details: thrown.details,
    };
  }
  if (thrown instanceof Error) {
    if (thrown.name === 'AbortError' || (signal?.aborted && thrown === signal.reason)) {
      return { type: CANCELLED_ERROR, message: thrown.message || 'the attempt was cancelled', retryable: false };
    }
    const type = thrown.name && thrown.name !== 'Error' ? thrown.name : 'Error';
    return { type, message: thrown.message, retryable: RETRYABLE_TYPES.includes(type) };
  }
  return { type: 'Error', message: String(thrown), retryable: false };
}
