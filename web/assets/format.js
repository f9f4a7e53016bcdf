// Number and time formatting: Intl.NumberFormat in the viewer's locale, digits chosen by magnitude
// so sats, VND and gold all read sensibly.

const formats = new Map();

function numberFormat(options) {
  const key = JSON.stringify(options);
  if (!formats.has(key)) formats.set(key, new Intl.NumberFormat(undefined, options));
  return formats.get(key);
}

/** Plain number: whole units when huge, cents in the thousands, four significant digits below. */
export function formatNumber(value) {
  const size = Math.abs(value);
  if (size >= 1e5) return numberFormat({ maximumFractionDigits: 0 }).format(value);
  if (size >= 100) {
    return numberFormat({ minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(value);
  }
  if (size >= 1e-6 || size === 0) {
    return numberFormat({ maximumSignificantDigits: 4 }).format(value);
  }
  return numberFormat({ notation: 'scientific', maximumSignificantDigits: 4 }).format(value);
}

// Sign-like units ("$", "€", "R$", "R") go before the number; words ("ETH", "sats", "kr.") after.
const PREFIX_UNIT = /\p{Sc}|^\p{L}$/u;

/** "$24,711.87", "14.55 ETH", "100,000,000 sats". */
export function formatAmount(value, unit) {
  const number = formatNumber(value);
  if (!unit) return number;
  return PREFIX_UNIT.test(unit) ? `${unit}${number}` : `${number}\u202f${unit}`;
}

/** Signed percentage from a ratio (0.0123 → "+1.23%"); tiny moves keep two significant digits. */
export function formatPercent(ratio) {
  const options = Math.abs(ratio) < 1e-4 && ratio !== 0
    ? { style: 'percent', signDisplay: 'exceptZero', maximumSignificantDigits: 2 }
    : { style: 'percent', signDisplay: 'exceptZero', minimumFractionDigits: 2, maximumFractionDigits: 2 };
  return numberFormat(options).format(ratio);
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'always', style: 'short' });

/** Age of a timestamp as "12 sec. ago", "3 min. ago". */
export function formatAge(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 90) return relative.format(-seconds, 'second');
  if (seconds < 90 * 60) return relative.format(-Math.round(seconds / 60), 'minute');
  return relative.format(-Math.round(seconds / 3600), 'hour');
}
