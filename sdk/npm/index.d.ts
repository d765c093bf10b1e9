/** Google Consent Mode v2 values (booleans are accepted too). */
export type ConsentValue = "granted" | "denied" | boolean;

/** The seven Google Consent Mode v2 purposes. */
export type Purpose =
  | "ad_storage"
  | "analytics_storage"
  | "ad_user_data"
  | "ad_personalization"
  | "functionality_storage"
  | "personalization_storage"
  | "security_storage";

/** Consent values per purpose. */
export type ConsentValues = { [P in Purpose]?: ConsentValue };

/** A consent default, like `gtag('consent', 'default', {...})`. */
export interface ConsentDefault extends ConsentValues {
  /** ISO 3166-1/-2 codes this default applies to (`["NL", "US-CA"]`); omitted: everywhere. */
  region?: string[];
  /** Hold events this long (ms) for a consent update before the defaults decide. */
  wait_for_update?: number;
}

/** The consent in force, as every event carries it in `context.consent`. */
export interface ConsentState {
  categoryPreferences: { [P in Purpose]: boolean };
  gcm: { [P in Purpose]: "granted" | "denied" };
  tcString?: string;
  gpc?: true;
}

/** Options for {@link load}. */
export interface LoadOptions {
  /** The source's write key (public; identifies the source). */
  writeKey: string;
  /** Collector base URL. Default: the page's own origin (the Worker serves the site). */
  endpoint?: string;
  /**
   * Consent default at load (a second `load()` applies it as an update). Without
   * `analytics_storage: "granted"` (here, from gtag, a TCF CMP or `consent.update`) no identifier
   * is stored.
   */
  consent?: ConsentDefault;
  /** The ID cookie's domain (e.g. `"example.com"` to share it with subdomains). Default host-only. */
  cookie?: { domain?: string };
  /** Send as soon as this many events wait. Default 20. */
  flushAt?: number;
  /** Send at least this often, in milliseconds. Default 5000. */
  flushInterval?: number;
  /** Log delivery problems to the console. Default false. */
  debug?: boolean;
  /**
   * Events before `analytics_storage` is granted: `"buffer"` (default: held in memory, sent with
   * the ID once granted), `"drop"`, or `"cookieless"` (sent now with a page-only ID).
   */
  preConsent?: "buffer" | "drop" | "cookieless";
  /** Byte budget of the stored queue; the oldest events are evicted (and counted) past it. Default 1 MB. */
  queueBytes?: number;
  /** Send a page view on History API navigations. Default true. */
  autoPage?: boolean;
  /** The visitor's region (`"NL"`, `"US-CA"`) for region-scoped consent defaults. */
  region?: string;
  /** Where to fetch the wasm module from, when a bundler moves it. */
  wasmUrl?: string | URL;
  /**
   * The wasm module compiled while the page parsed (the README's snippet: `window.seamWasm`).
   * If it failed to compile, the SDK fetches `wasmUrl` instead.
   */
  wasm?: WebAssembly.Module | PromiseLike<unknown>;
}

/** JSON-serialisable event properties or traits. */
export type Properties = Record<string, unknown>;

declare global {
  /** Set by the README's snippet: the wasm module compiling while the page parses. */
  var seamWasm: PromiseLike<unknown> | undefined;
}

export function load(options: LoadOptions): Promise<boolean>;
export function track(event: string, properties?: Properties): void;
export function page(name?: string | Properties, properties?: Properties): void;
export function identify(
  userId?: string | Properties,
  traits?: Properties,
  options?: { identityToken?: string },
): void;
export function group(groupId: string, traits?: Properties): void;
export function alias(userId: string, previousId?: string): void;
export const consent: {
  update(values: ConsentValues): void;
  get(): ConsentState | undefined;
};
export function flush(): Promise<void>;
export function anonymousId(): string | undefined;
export function reset(): void;
export function pending(): number;
