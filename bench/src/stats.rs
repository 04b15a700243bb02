//! Small statistics and number formatting.

/// The median (of a copy); NaN for an empty slice.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A quantile in `[0, 1]` (nearest rank).
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// `12,345`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio with two decimals and a `×`.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// Nanoseconds, one decimal below 100.
pub fn ns(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.abs() < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x.round() as usize)
    }
}

/// Microseconds with one decimal.
pub fn us(x_ns: f64) -> String {
    if x_ns.is_finite() {
        format!("{:.1}", x_ns / 1000.0)
    } else {
        "–".into()
    }
}

/// Milliseconds: two decimals below 10, else none.
pub fn ms(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x < 0.1 {
        format!("{x:.3}")
    } else if x < 10.0 {
        format!("{x:.2}")
    } else {
        thousands(x.round() as usize)
    }
}

/// A one-line, table-safe excerpt of an error message (at most 120
/// characters, no `|` or newline).
pub fn short(s: &str) -> String {
    let s = s.replace('|', "/").replace('\n', " ");
    if s.len() > 120 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(117).map_or(s.len(), |x| x.0)]
        )
    } else {
        s
    }
}
