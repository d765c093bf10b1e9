/** A slot to decide: its name, or its name and how many items. */
export type SlotRequest = string | { id: string; limit?: number };

/** One recommended item (catalogue fields when known). */
export interface DecidedItem {
  product_id: string;
  reason: "co_purchased" | "co_viewed" | "category" | "recently_viewed" | "popular";
  name?: string;
  category?: string;
  brand?: string;
  price?: number;
  currency?: string;
  url?: string;
  image_url?: string;
}

/** What one slot shows. */
export interface Decision {
  slot: string;
  /** `personalised`, `default`, `control` (holdout), or a banner variant (`none`: no banner). */
  variant: string;
  reason: string;
  items: DecidedItem[];
  /** The slot's markup from the edge's templates (empty: keep the page's content). */
  html: string;
}

export interface Decisions {
  profileId: string | null;
  personalised: boolean;
  /** `personalised`, `cold_start`, `consent_denied` or `holdout`. */
  reason: string;
  decisions: Decision[];
  exposureId?: string;
}

export interface DecideOptions {
  /** The source's write key (as given to `load`). */
  writeKey: string;
  /** Collector base URL. Default: the page's own origin. */
  endpoint?: string;
  /** The signed-in user, when known. */
  userId?: string;
  /** Fill the page's `[data-seam-slot]` elements. Default true. */
  fill?: boolean;
  /** Where to look for slots. Default `document`. */
  root?: ParentNode;
}

/** Asks the edge what each slot shows and fills them; undefined when the collector did not answer. */
export function decide(slots: SlotRequest[], options: DecideOptions): Promise<Decisions | undefined>;
/** Fills `[data-seam-slot]` elements with decisions' markup. */
export function fill(result: Decisions, root?: ParentNode): void;
