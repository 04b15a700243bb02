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

/// A median with a distribution-free confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MedianCi {
    pub median: f64,
    /// Order statistics around the median whose interval covers the
    /// population median with probability ≥ `level` (binomial, no
    /// assumption about the distribution).
    pub lo: f64,
    pub hi: f64,
    pub level: f64,
}

/// The median of `xs` and its ≥ 95 % confidence interval by order
/// statistics: with `n` independent values, the interval from the k-th
/// smallest to the k-th largest misses the population median with
/// probability 2·P(Binomial(n, ½) < k); k is the largest with that
/// ≤ 5 %. Fewer than 6 values give no such k: the interval is then the
/// whole range (and `level` says what it covers).
pub fn median_ci(xs: &[f64]) -> MedianCi {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return MedianCi {
            median: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            level: 0.0,
        };
    }
    // P(Binomial(n, 1/2) <= j) for j = 0, 1, …
    let mut cdf = Vec::with_capacity(n + 1);
    let (mut term, mut sum) = (0.5f64.powi(n as i32), 0.0);
    for j in 0..=n {
        sum += term;
        cdf.push(sum);
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    // k (1-based) with 2·P(B ≤ k−1) ≤ 0.05, the largest; at least 1.
    let mut k = 1;
    while k < n.div_ceil(2) && 2.0 * cdf[k] <= 0.05 {
        k += 1;
    }
    MedianCi {
        median: median(&v),
        lo: v[k - 1],
        hi: v[n - k],
        level: 1.0 - 2.0 * cdf[k - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interval's ranks are the textbook ones: n = 20 → 6th and 15th
    /// (95.9 %), n = 10 → 2nd and 9th (97.9 %).
    #[test]
    fn median_ci_ranks() {
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        let c = median_ci(&xs);
        assert_eq!((c.lo, c.hi, c.median), (6.0, 15.0, 10.5));
        assert!((c.level - 0.9586).abs() < 1e-3, "{}", c.level);
        let xs: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let c = median_ci(&xs);
        assert_eq!((c.lo, c.hi), (2.0, 9.0));
        assert!((c.level - 0.9785).abs() < 1e-3, "{}", c.level);
        let c = median_ci(&[3.0, 1.0, 2.0]);
        assert_eq!((c.lo, c.hi, c.median), (1.0, 3.0, 2.0));
        assert_eq!(c.level, 0.75);
    }
}
