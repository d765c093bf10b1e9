/** Google Consent Mode v2 values. */
export type ConsentValue = "granted" | "denied";

/** Options for {@link load}. */
export interface LoadOptions {
  /** The source's write key (public; identifies the source). */
  writeKey: string;
  /** Collector base URL. Default: the page's own origin (the Worker serves the site). */
  endpoint?: string;
  /** Send as soon as this many events wait. Default 20. */
  flushAt?: number;
  /** Send at least this often, in milliseconds. Default 5000. */
  flushInterval?: number;
  /** Log delivery problems to the console. Default false. */
  debug?: boolean;
  /** Consent at load. Without `analytics_storage: "granted"` no identifier is stored. */
  consent?: { analytics_storage?: ConsentValue; [purpose: string]: ConsentValue | undefined };
  /** Where to fetch the wasm module from, when a bundler moves it. */
  wasmUrl?: string | URL;
}

/** JSON-serialisable event properties or traits. */
export type Properties = Record<string, unknown>;

export function load(options: LoadOptions): Promise<boolean>;
export function track(event: string, properties?: Properties): void;
export function page(name?: string | Properties, properties?: Properties): void;
export function flush(): Promise<void>;
export function anonymousId(): string | undefined;
export function reset(): void;
export function pending(): number;
