/**
 * Options -> runlane_conf_t. The core's property table
 * (runlane_conf_properties()) is the only truth: it gives the keys, types,
 * defaults and ranges; the core validates every value (runlane_conf_set) and
 * its message is what the user sees.
 */
import { ConfigError, ErrorCode, InvalidOptionError, RunlaneError, UnknownOptionError, check, toRunlaneError } from './errors';
import { Pointer, raw } from './native';

/** One entry of runlane_conf_properties(). */
export interface PropertyInfo {
  /** Dotted key, e.g. `batch.window.ms`. */
  name: string;
  /** camelCase option name, e.g. `batchWindowMs`. */
  option: string;
  type: 'string' | 'int' | 'enum' | 'bool' | 'float' | 'json';
  default: string;
  min?: number;
  max?: number;
  max_bytes?: number;
  values?: string[];
  secret: boolean;
  doc: string;
}

/** `batch.window.ms` -> `batchWindowMs`. */
export function camelOf(key: string): string {
  return key
    .split('.')
    .map((p, i) => (i === 0 ? p : p.charAt(0).toUpperCase() + p.slice(1)))
    .join('');
}

/** `batchWindowMs` -> `batch.window.ms` (for names the table does not know). */
export function dottedOf(option: string): string {
  return option.replace(/[A-Z]/g, (c) => `.${c.toLowerCase()}`);
}

let props: PropertyInfo[] | undefined;
let byOption: Map<string, PropertyInfo> | undefined;
let byKey: Map<string, PropertyInfo> | undefined;

/** The property table of the loaded core, with camelCase names. */
export function properties(): readonly PropertyInfo[] {
  if (!props) {
    const list = JSON.parse(raw().runlane_conf_properties()) as Omit<PropertyInfo, 'option'>[];
    props = list.map((p) => ({ ...p, option: camelOf(p.name) }));
    byOption = new Map(props.map((p) => [p.option, p]));
    byKey = new Map(props.map((p) => [p.name, p]));
  }
  return props;
}

export function propertyByOption(option: string): PropertyInfo | undefined {
  properties();
  return byOption!.get(option);
}

export function propertyByKey(key: string): PropertyInfo | undefined {
  properties();
  return byKey!.get(key);
}

export type ConfigValue = string | number | boolean | Record<string, unknown> | unknown[];

/** The string the core expects for a value of a property. */
function encode(p: PropertyInfo | undefined, value: ConfigValue): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : String(value);
  if (p && p.type !== 'json') return String(value);
  return JSON.stringify(value);
}

function closest(name: string): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestScore = Infinity;
  for (const p of properties()) {
    const d = distance(lower, p.option.toLowerCase());
    if (d < bestScore) {
      bestScore = d;
      best = p.option;
    }
  }
  return bestScore <= Math.max(2, Math.floor(name.length / 4)) ? best : undefined;
}

function distance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0];
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length];
}

/** A configuration being built; destroy() it when done. */
export class Conf {
  readonly ptr: Pointer;

  constructor() {
    this.ptr = check(() => raw().runlane_conf_new());
  }

  /**
   * Sets a configuration key (dotted) or option (camelCase). `label` names
   * what the user wrote, for the message.
   */
  set(name: string, value: ConfigValue, label = name): void {
    if (value === undefined || value === null) return;
    const p = name.includes('.') ? propertyByKey(name) : propertyByOption(name);
    const key = p ? p.name : name.includes('.') ? name : dottedOf(name);
    const text = encode(p, value);
    // A C string ends at a NUL: refused rather than cut (JSON values carry
    // it as \u0000, which the core refuses itself).
    if (text.includes('\0')) {
      throw new InvalidOptionError(`runlane: ${label} (${key}): the value must not contain NUL characters`, ErrorCode.INVALID_VALUE);
    }
    try {
      raw().runlane_conf_set(this.ptr, key, text);
    } catch (e) {
      const err = toRunlaneError(e);
      if (err instanceof UnknownOptionError) {
        const hint = closest(label);
        throw new UnknownOptionError(
          `runlane: unknown option "${label}"${hint ? ` (did you mean "${hint}"?)` : ''}; ` +
            `options are the camelCased configuration keys, see runlaneConfigProperties()`,
          err.errno,
        );
      }
      if (err instanceof RunlaneError) {
        const what = label === key ? `"${key}"` : `"${label}" (${key})`;
        throw new InvalidOptionError(`runlane: invalid option ${what}: ${err.message}`, err.errno);
      }
      throw err;
    }
  }

  get(key: string): string {
    return check(() => raw().runlane_conf_get(this.ptr, key));
  }

  /** Every key and its value (secrets masked). */
  dump(): Record<string, string> {
    return JSON.parse(check(() => raw().runlane_conf_dump(this.ptr))) as Record<string, string>;
  }

  destroy(): void {
    raw().runlane_conf_destroy(this.ptr);
  }
}

export { ConfigError };
