// Readable numbers and times. Each formatter returns {text, title}: the short form shown and
// the exact value for the title attribute (shown on hover).

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const cents = new Intl.NumberFormat(undefined, {
  style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2,
});
const precise = new Intl.NumberFormat(undefined, {
  style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6,
});
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

// Counts from 100,000 up are shortened (1.2M); the exact count is always in the title.
const SHORTEN_FROM = 100000;

export function count(value) {
  const number = Number(value) || 0;
  const exact = integer.format(number);
  return { text: Math.abs(number) >= SHORTEN_FROM ? compact.format(number) : exact, title: exact };
}

export function exactCount(value) {
  return integer.format(Number(value) || 0);
}

export function decimal(value) {
  return oneDecimal.format(Number(value) || 0);
}

export function money(value) {
  const number = Number(value) || 0;
  return { text: cents.format(number), title: precise.format(number) };
}

export function percent(value) {
  return `${oneDecimal.format(Number(value) || 0)} %`;
}

export function when(iso) {
  if (!iso) return { text: "–", title: "" };
  const moment = new Date(iso);
  return { text: dateTime.format(moment), title: moment.toString() };
}

export function clock(moment) {
  return timeOnly.format(moment);
}

// "3h 40m 05s" from whole seconds (never negative).
export function duration(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = String(total % 60).padStart(2, "0");
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m ${rest}s`;
  return `${minutes}m ${rest}s`;
}

// The colour rule of a usage bar: ok below 50 %, warn above 50 %, bad above 80 %.
export function level(percentage) {
  if (percentage > 80) return "bad";
  if (percentage > 50) return "warn";
  return "ok";
}

export function timeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}
