// Numbers as the reader's locale writes them; money in its own currency, never summed across currencies.
export const locale = () => navigator.language || "en-US";

const cache = new Map();
function formatter(key, options) {
  const id = `${locale()}|${key}`;
  if (!cache.has(id)) cache.set(id, new Intl.NumberFormat(locale(), options));
  return cache.get(id);
}

export function money(value, currency) {
  if (value === null || value === undefined) return "–";
  try {
    return formatter(`money:${currency}`, { style: "currency", currency, maximumFractionDigits: 2 }).format(value);
  } catch { // not an ISO 4217 code: the number and the code
    return `${number(value)} ${currency}`;
  }
}

export const number = (value, digits = 0) =>
  value === null || value === undefined ? "–" : formatter(`n:${digits}`, { maximumFractionDigits: digits }).format(value);

export const percent = (value, digits = 1) =>
  value === null || value === undefined ? "–"
    : formatter(`p:${digits}`, { style: "percent", maximumFractionDigits: digits, minimumFractionDigits: digits }).format(value);

export function hours(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${number(value * 60, 0)} min`;
  if (value < 48) return `${number(value, 1)} h`;
  return `${number(value / 24, 1)} d`;
}

export const days = (value) => (value === null || value === undefined ? "–" : value < 1 ? hours(value * 24) : `${number(value, 1)} d`);

/** A KPI value in its unit (domain/kpis.py: ratio, money, count, hours, days, score). */
export function value(v, unit, currency) {
  switch (unit) {
    case "ratio": return percent(v);
    case "money": return money(v, currency);
    case "hours": return hours(v);
    case "days": return days(v);
    case "score": return number(v, 1);
    case "per_1000": return `${number(v, 1)} ‰`;
    default: return number(v, Number.isInteger(v) ? 0 : 2);
  }
}

/** The change from `before` to `now`, as a share (null when there is nothing to compare with). */
export function change(now, before) {
  if (now === null || now === undefined || before === null || before === undefined || before === 0) return null;
  return (now - before) / Math.abs(before);
}

export function dateTime(text) {
  if (!text) return "–";
  return new Intl.DateTimeFormat(locale(), { dateStyle: "medium", timeStyle: "short" }).format(new Date(text));
}

export function day(period, granularity = "day") {
  const d = new Date(`${period}T00:00:00Z`);
  const options = granularity === "month" ? { year: "numeric", month: "short", timeZone: "UTC" }
    : { month: "short", day: "numeric", timeZone: "UTC" };
  return new Intl.DateTimeFormat(locale(), options).format(d);
}

/** An axis tick: short (compact notation, no cents). */
export function axis(v, unit, currency) {
  if (v === null || v === undefined) return "";
  if (unit === "ratio") return percent(v, 0);
  if (unit === "money" && currency) {
    try {
      return formatter(`axis:${currency}`, { style: "currency", currency, notation: "compact", maximumFractionDigits: 1 }).format(v);
    } catch { /* not an ISO 4217 code */ }
  }
  return formatter("axis", { notation: "compact", maximumFractionDigits: 1 }).format(v);
}
