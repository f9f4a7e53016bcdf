// Number and time formatting: Intl.NumberFormat in the viewer's locale, digits chosen by
// significant digits so $0.0000123, $1.0716, $1,698.06 and ₫587,119,904 all read well.

const formats = new Map();

function numberFormat(options) {
  const key = JSON.stringify(options);
  if (!formats.has(key)) formats.set(key, new Intl.NumberFormat(undefined, options));
  return formats.get(key);
}

// Five significant digits tell a 0.01 % move apart at any magnitude, which is what a rate
// screen is for; cents are kept where a value has them ($1,698.06, not $1,698.1).
const SIGNIFICANT = 5;

/**
 * Plain number: whole units from 100,000 (VND, IDR, sats), cents from 100, five significant
 * digits below ($1.0716, $0.0074568), scientific notation under 0.000001 (1.7032E-9).
 */
export function formatNumber(value) {
  const size = Math.abs(value);
  if (size >= 1e5) return numberFormat({ maximumFractionDigits: 0 }).format(value);
  if (size >= 100) {
    return numberFormat({ minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(value);
  }
  if (size >= 1e-6 || size === 0) {
    return numberFormat({ maximumSignificantDigits: SIGNIFICANT }).format(value);
  }
  return numberFormat({ notation: 'scientific', maximumSignificantDigits: SIGNIFICANT }).format(value);
}

// Sign-like units ("$", "€", "R$", "R") go before the number; words ("ETH", "sats", "kr.") after.
const PREFIX_UNIT = /\p{Sc}|^\p{L}$/u;

/** "$24,711.87", "14.553 ETH", "100,000,000 sats". */
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

/**
 * A duration as "12 s", "3 min", "2 h": short enough to read across a room, and with no
 * locale abbreviation ("sec.") to stumble over.
 */
export function formatDuration(ms) {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

/** Age of a timestamp: "12 s ago", "3 min ago". */
export function formatAge(ms) {
  return `${formatDuration(ms)} ago`;
}
