//! The two-sample Kolmogorov–Smirnov test's two-sided p-value, computed as scipy 1.17 computes it in
//! `scipy.stats.ks_2samp(a, b)` (method "auto"), so that it equals scipy's at every size:
//! - up to 10,000 values on the larger side, the exact distribution of D (Hodges' lattice paths);
//! - above that, or when the exact computation fails, the finite-n two-sided Kolmogorov distribution
//!   `kstwo.sf(d, round(n1·n2 / (n1 + n2)))`, which scipy evaluates by Simard and L'Ecuyer's choice among
//!   Durbin's matrix (as Marsaglia, Tsang and Wang compute it), Pomeranz's recursion, the Pelz–Good expansion,
//!   Ruben–Gambino's closed forms and twice the one-sided Smirnov tail (`scipy.special.smirnov`, a
//!   Birnbaum–Tingey sum in double-double arithmetic).
//!
//! Ported from scipy's `stats/_stats_py.py` and `stats/_ksstats.py` and xsf's `cephes/kolmogorov.h` and
//! `cephes/dd_real.h` (BSD-3-Clause), keeping their branch points and order of operations.

/// scipy's `MAX_AUTO_N`: "auto" tries the exact distribution while the larger side has at most this many values.
const MAX_AUTO_N: usize = 10_000;

/// The two-sided p-value of `ks_2samp(a, b)` for sorted samples (NaN when one is empty).
pub(crate) fn ks_2samp(a: &[f64], b: &[f64]) -> f64 {
    two_sided_p_value(a.len(), b.len(), ks_statistic(a, b))
}

/// Distinct (sizes, statistic) p-values remembered per thread; past this the memory starts again.
const MEMO_CAPACITY: usize = 4_096;

/// The two-sided p-value of a K-S statistic `d` between samples of `n1` and `n2` values (NaN when one is empty).
///
/// Remembered per thread: live drift tests windows of one size against one reference column again and again, and
/// the p-value depends on the sizes and `d` alone (exactly: `d` takes at most lcm(n1, n2) + 1 values). The exact
/// computation walks an n1 × n2 lattice band (0.4 ms for 1,000 rows against 120, on the thread that tests live
/// windows); a repeated statistic is then a map lookup.
pub(crate) fn two_sided_p_value(n1: usize, n2: usize, d: f64) -> f64 {
    thread_local! {
        static MEMO: std::cell::RefCell<std::collections::HashMap<(usize, usize, u64), f64>> =
            std::cell::RefCell::default();
    }
    let key = (n1, n2, d.to_bits());
    if let Some(p) = MEMO.with_borrow(|memo| memo.get(&key).copied()) {
        return p;
    }
    let p = compute_two_sided_p_value(n1, n2, d);
    MEMO.with_borrow_mut(|memo| {
        if memo.len() >= MEMO_CAPACITY {
            memo.clear();
        }
        memo.insert(key, p);
    });
    p
}

fn compute_two_sided_p_value(n1: usize, n2: usize, d: f64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return f64::NAN;
    }
    let mut d = d;
    if n1.max(n2) <= MAX_AUTO_N {
        match ks_exact(n1, n2, d) {
            Ok(p) => return p.clamp(0.0, 1.0),
            // scipy goes on with the statistic rounded to the lattice, h / lcm.
            Err(rounded) => d = rounded,
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    kstwo_sf(en.round_ties_even(), d).clamp(0.0, 1.0)
}

/// D = max |F_a − F_b| over every observed value, each CDF evaluated as (count ≤ x) / n.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    if min_s > max_diff { min_s } else { max_diff }
}

const fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// scipy's `_attempt_exact_2kssamp`, two-sided: the p-value, or when the computation fails the statistic rounded
/// to the lattice (which scipy's fallback then uses).
fn ks_exact(n1: usize, n2: usize, d: f64) -> Result<f64, f64> {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as usize;
    if h == 0 {
        return Ok(1.0);
    }
    let p = if n1 == n2 { prob_outside_square(n1, h) } else { outer_prob_inside(n1, n2, g, h) };
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(h as f64 / lcm as f64) }
}

/// scipy's `_compute_prob_outside_square(n, h)`.
fn prob_outside_square(n: usize, h: usize) -> f64 {
    let mut total = 0.0;
    let mut k = n / h;
    loop {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n as f64 - (k * h) as f64 - j as f64) * p1 / ((n + k * h + j + 1) as f64);
        }
        total = p1 * (1.0 - total);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * total
}

/// scipy's `_compute_outer_prob_inside_method(m, n, g, h)` (Hodges' inside method, computing 1 − p directly).
fn outer_prob_inside(m: usize, n: usize, g: usize, h: usize) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    let (hf, mgf, ngf) = (h as f64, mg as f64, ng as f64);
    let mut minj: usize = 0;
    let mut maxj: usize = ((hf / mgf).ceil() as usize).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1);
    let mut a = vec![1.0f64; len_a];
    // 1/(i + j) for every i + j the lattice reaches: a multiplication instead of a division in the inner loop
    // (half the time on a dependent chain; the result moves by a few units in the last place, not at 1e-12).
    let inverse: Vec<f64> = (0..=m + n).map(|k| if k == 0 { 0.0 } else { 1.0 / k as f64 }).collect();
    for v in a.iter_mut().take(maxj).skip(minj) {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        let lower = ((ngf * i as f64 - hf) / mgf).floor() + 1.0;
        minj = if lower > 0.0 { (lower as usize).min(n) } else { 0 };
        maxj = (((ngf * i as f64 + hf) / mgf).ceil() as usize).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            val = (a[jj + minj - lastminj] * i as f64 + val * j as f64) * inverse[i + j];
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            for v in &mut a[maxj - minj..maxj - minj + (lastlen - curlen)] {
                *v = 1.0;
            }
        }
    }
    a[maxj - minj - 1]
}

// ---------------------------------------------------------------------------------------------------------------
// The finite-n two-sided Kolmogorov distribution (scipy.stats.kstwo, scipy/stats/_ksstats.py).

/// `kstwo.sf(x, n)`: `rv_continuous.sf` around `_kolmogn(n, x, cdf=False)`, with its support (0.5/n, 1).
fn kstwo_sf(n: f64, x: f64) -> f64 {
    if x.is_nan() || n.is_nan() || n < 1.0 || n.fract() != 0.0 {
        return f64::NAN;
    }
    if x <= 0.5 / n {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    kolmogn_sf(n as u64, x)
}

/// 2¹²⁸ and 2⁻¹²⁸: the steps by which scipy rescales intermediate results.
const EP128: f64 = 3.402_823_669_209_385e38;
const EM128: f64 = 1.0 / EP128;
const E128: i64 = 128;

/// `_kolmogn(n, x, cdf=False)` for 0 < x < 1: Simard and L'Ecuyer's choice of method.
fn kolmogn_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben–Gambino: 1/2n ≤ x ≤ 1/n.
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            (1..=n).map(|i| i as f64 * (1.0 / nf) * (2.0 * t - 1.0)).product::<f64>()
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        // Ruben–Gambino again, at the top of the range.
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        // The two one-sided tails cannot both be exceeded.
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nxsquared = t * x;
    if n <= 140 {
        let cdf = if nxsquared <= 0.754_693 {
            dmtw_cdf(n, x)
        } else if nxsquared <= 4.0 {
            pomeranz_cdf(n, x)
        } else {
            return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
        };
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        dmtw_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

/// log(n! / nⁿ) by Stirling's series, with n log n taken out first to avoid cancellation.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // B_2j / (2j (2j − 1)) for j = 8, …, 1 (scipy's `_STIRLING_COEFFS`, rounded to f64).
    const STIRLING: [f64; 8] = [
        -0.029_550_653_594_771_242,
        0.006_410_256_410_256_41,
        -0.001_917_526_917_526_917_6,
        0.000_841_750_841_750_841_7,
        -0.000_595_238_095_238_095_3,
        0.000_793_650_793_650_793_7,
        -0.002_777_777_777_777_778,
        0.083_333_333_333_333_33,
    ];
    let rn = 1.0 / n;
    let x = rn / n;
    let poly = STIRLING.iter().fold(0.0, |y, c| y * x + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// `_kolmogn_DMTW`: P(D_n ≤ d) from the k-th diagonal entry of Durbin's matrix to the n-th power.
fn dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;

    // v[j] = (1 − h^(j+1)) / (j+1)!, w[j] = 1 / j!; the last v entry has its own form.
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;

    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r + 1 - i];
        }
    }
    for (r, &vr) in v.iter().enumerate() {
        hm[r * m] = vr;
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }

    let mut power = vec![0.0; m * m];
    for i in 0..m {
        power[i * m + i] = 1.0;
    }
    let (mut nn, mut expnt, mut h_expnt) = (n, 0i64, 0i64);
    let diag = (k - 1) * m + (k - 1);
    while nn > 0 {
        if nn % 2 == 1 {
            power = matmul(&power, &hm, m);
            expnt += h_expnt;
        }
        hm = matmul(&hm, &hm, m);
        h_expnt *= 2;
        if hm[diag].abs() > EP128 {
            for x in &mut hm {
                *x /= EP128;
            }
            h_expnt += E128;
        }
        nn /= 2;
    }

    // Multiply by n! / nⁿ, keeping the running product away from underflow.
    let mut p = power[diag];
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    p.clamp(0.0, 1.0)
}

/// The product of two m×m row-major matrices.
fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for l in 0..m {
            let x = a[i * m + l];
            for j in 0..m {
                out[i * m + j] += x * b[l * m + j];
            }
        }
    }
    out
}

/// `_pomeranz_compute_j1j2`: the first and last non-zero entries of row i.
fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// `_kolmogn_Pomeranz`: P(D_n ≤ x) by Pomeranz's recursion (used for n ≤ 140).
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let n = n as i64;
    let t = n as f64 * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    // (g/n)^m/m!, (2g/n)^m/m!, ((1−2g)/n)^m/m!: Poisson probabilities without their normalising factor.
    let (mut gpower, mut twogpower, mut onem2gpower) = (vec![1.0; npwrs], vec![1.0; npwrs], vec![1.0; npwrs]);
    let nf = n as f64;
    let (g_n, two_g_n, one_m2g_n) = (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_m2g_n / m as f64;
    }

    let (mut v0, mut v1) = (vec![0.0; npwrs], vec![0.0; npwrs]);
    v1[0] = 1.0;
    let (mut v0s, mut v1s) = (0i64, 0i64);
    let mut expnt = 0i64;
    let mut j1 = pomeranz_j1j2(0, n, ll, ceilf, roundf).0;
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (next_j1, j2) = pomeranz_j1j2(i, n, ll, ceilf, roundf);
        j1 = next_j1;
        let pwrs = if i == 1 || i == 2 * n + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            // The rows' windows stay inside the arrays (scipy slices them the same way).
            let ln2 = ln2 as usize;
            let start = (k1 - v0s) as usize;
            let (conv_start, conv_len) = ((j1 - k1) as usize, (j2 - j1 + 1) as usize);
            let row = &v0[start..start + ln2];
            for (out, c) in v1[..conv_len].iter_mut().zip(conv_start..) {
                // Entry c of the full convolution of `row` with pwrs[..ln2].
                let lo = c.saturating_sub(ln2 - 1);
                *out = (lo..=c.min(ln2 - 1)).map(|a| row[a] * pwrs[c - a]).sum();
            }
            let top = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < top && top < EM128 {
                for x in &mut v1 {
                    *x *= EP128;
                }
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }

    // Multiply by n!.
    let mut ans = v1[(n - v1s) as usize];
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    ans.clamp(0.0, 1.0)
}

/// `_kolmogn_PelzGood`: the Pelz–Good approximation to P(D_n ≤ x) (Li-Chien and Korolyuk's expansion in
/// powers of 1/√n, each term in its Jacobi-theta form for small z = x√n). Not clipped, as in scipy.
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let z = n.sqrt() * x;
    let (z2, z3, z4, z6) = (z.powf(2.0), z.powf(3.0), z.powf(4.0), z.powf(6.0));
    let (pi2, pi4, pi6) = (PI.powf(2.0), PI.powf(4.0), PI.powf(6.0));
    let sqrt2pi = (2.0 * PI).sqrt();

    let qlog = -pi2 / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();

    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powf(8.0);

    // Horner over the odd integers m = 2k − 1 of Σ c_m q^(m²).
    let mut kk = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as u64;
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m.powf(2.0), m.powf(4.0), m.powf(6.0));
        let qpower = q.powf((8 * k) as f64);
        let coeffs = [1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6];
        for (acc, c) in kk.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let scale = [z, 6.0 * z4, 72.0 * z.powf(7.0), 6480.0 * z.powf(10.0)];
    for (acc, s) in kk.iter_mut().zip(scale) {
        *acc = *acc * q * sqrt2pi / s;
    }

    // The terms over all integers k in K2 and K3.
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let k2 = (k * k) as f64;
        let kpi = PI * k as f64;
        let qk = q.powf(k2);
        k2extra += k2 * qk;
        k3extra += (sqrt3z + kpi) * (sqrt3z - kpi) * k2 * qk;
    }
    kk[2] += k2extra * (pi2 * sqrt2pi / (-36.0 * z3));
    kk[3] += k3extra * (pi2 * sqrt2pi / (216.0 * z6));
    kk.iter().enumerate().map(|(i, k)| k / n.powf(i as f64 / 2.0)).sum()
}

// ---------------------------------------------------------------------------------------------------------------
// The one-sided Smirnov tail (scipy.special.smirnov, xsf cephes/kolmogorov.h), in double-double arithmetic.

/// A double-double number hi + lo (xsf's `double_double`, from the qd package): about 106 bits of significand.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dd {
    hi: f64,
    lo: f64,
}

/// fl(a + b) and its error, for |a| ≥ |b|.
fn quick_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// fl(a + b) and its error.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let c = s - a;
    let d = b - c;
    let e = s - c;
    (s, (a - e) + d)
}

/// fl(a · b) and its error.
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl Dd {
    const ONE: Self = Self { hi: 1.0, lo: 0.0 };

    const fn of(x: f64) -> Self {
        Self { hi: x, lo: 0.0 }
    }

    fn is_zero(self) -> bool {
        self.hi == 0.0 && self.lo == 0.0
    }

    fn add(self, o: Self) -> Self {
        let (s1, s2) = two_sum(self.hi, o.hi);
        let (t1, t2) = two_sum(self.lo, o.lo);
        let (s1, s2) = quick_two_sum(s1, s2 + t1);
        let (hi, lo) = quick_two_sum(s1, s2 + t2);
        Self { hi, lo }
    }

    fn add_f(self, b: f64) -> Self {
        let (s1, s2) = two_sum(self.hi, b);
        let (hi, lo) = quick_two_sum(s1, s2 + self.lo);
        Self { hi, lo }
    }

    fn sub_f(self, b: f64) -> Self {
        self.add_f(-b)
    }

    fn mul(self, o: Self) -> Self {
        let (p1, p2) = two_prod(self.hi, o.hi);
        let (hi, lo) = quick_two_sum(p1, p2 + (self.hi * o.lo + self.lo * o.hi));
        Self { hi, lo }
    }

    fn mul_f(self, b: f64) -> Self {
        let (p1, e1) = two_prod(self.hi, b);
        let (p2, e2) = two_prod(self.lo, b);
        let (hi, lo) = quick_two_sum(p1, e2 + p2 + e1);
        Self { hi, lo }
    }

    fn div(self, o: Self) -> Self {
        let q1 = self.hi / o.hi;
        let r = self.add(o.mul_f(q1).neg());
        let q2 = r.hi / o.hi;
        let r = r.add(o.mul_f(q2).neg());
        let q3 = r.hi / o.hi;
        let (q1, q2) = quick_two_sum(q1, q2);
        Self { hi: q1, lo: q2 }.add_f(q3)
    }

    fn div_f(self, b: f64) -> Self {
        self.div(Self::of(b))
    }

    const fn neg(self) -> Self {
        Self { hi: -self.hi, lo: -self.lo }
    }

    fn floor(self) -> Self {
        let hi = self.hi.floor();
        if hi == self.hi {
            let (hi, lo) = quick_two_sum(hi, self.lo.floor());
            return Self { hi, lo };
        }
        Self::of(hi)
    }

    fn ldexp(self, e: i64) -> Self {
        Self { hi: ldexp(self.hi, e), lo: ldexp(self.lo, e) }
    }

    /// (b, l) with 0.5 ≤ |b.hi| < 1 (or |b.hi| = 1 with b.lo of the other sign) and b · 2^l = self.
    fn frexp(self) -> (Self, i64) {
        let (mut man, mut e) = frexp(self.hi);
        let mut lo = ldexp(self.lo, -e);
        if man.abs() == 0.5 && man * lo < 0.0 {
            man *= 2.0;
            lo *= 2.0;
            e -= 1;
        }
        (Self { hi: man, lo }, e)
    }
}

/// C's `frexp`: x = m · 2^e with 0.5 ≤ |m| < 1 (zero, ∞ and NaN returned as they are, with e = 0).
fn frexp(x: f64) -> (f64, i64) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i64;
    if biased == 0 {
        // Subnormal: normalise first.
        let (m, e) = frexp(x * 2f64.powi(64));
        return (m, e - 64);
    }
    (f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52)), biased - 1022)
}

/// C's `ldexp`: x · 2^e, rounded once.
fn ldexp(mut x: f64, e: i64) -> f64 {
    // Past ±2200 the result is 0 or ∞ whatever x is; the clamp keeps the loops short.
    let mut e = e.clamp(-2200, 2200);
    let big = 2f64.powi(1023);
    // 2^-1022 · 2^53: steps that keep x normal, so that only the last multiplication rounds.
    let small = 2f64.powi(-969);
    while e > 1023 {
        x *= big;
        e -= 1023;
    }
    while e < -1022 {
        x *= small;
        e += 969;
    }
    x * f64::from_bits(((0x3ff + e) as u64) << 52)
}

/// `pow_D(a, m)`: a^m from `pow` of the high part, corrected for the low part.
fn pow_dd(a: Dd, m: i64) -> Dd {
    if m <= 0 {
        if m == 0 {
            return Dd::ONE;
        }
        return Dd::ONE.div(pow_dd(a, -m));
    }
    if a.is_zero() {
        return Dd::of(0.0);
    }
    let ans = a.hi.powf(m as f64);
    let r = a.lo / a.hi;
    let mut adj = m as f64 * r;
    if adj.abs() > 1e-8 {
        if adj.abs() < 1e-4 {
            // The first two terms of the Taylor series of (1 + r)^m.
            adj += (m as f64 * r) * ((m - 1) as f64 / 2.0 * r);
        } else {
            adj = (m as f64 * r.ln_1p()).exp_m1();
        }
    }
    Dd::of(ans).add_f(ans * adj)
}

/// `pow2(a, b, m)`: (a + b)^m.
fn pow2(a: f64, b: f64, m: i64) -> f64 {
    pow_dd(Dd::of(a).add_f(b), m).hi
}

/// `pow4_D(a, b, 1, 0, m)`: (a + b)^m, as xsf spells it for a ratio with denominator 1.
fn pow4_dd(a: f64, b: f64, m: i64) -> Dd {
    let c = Dd::ONE;
    if m <= 0 {
        if m == 0 {
            return Dd::ONE;
        }
        // ((1 + 0) / (a + b))^(−m)
        let num = Dd::of(a).add_f(b);
        if num.is_zero() {
            return Dd::of(f64::INFINITY);
        }
        return pow_dd(c.div(num), -m);
    }
    let num = Dd::of(a).add_f(b);
    if num.is_zero() {
        return Dd::of(0.0);
    }
    pow_dd(num.div(c), m)
}

/// Exponents kept below this so that both parts of a double-double stay normal.
const SM_MAX_EXPONENT: i64 = 960;

/// xsf's `nextPowerOf2` (which in fact returns |x + x·2⁻⁵²|, truncated to an integer when it is one).
fn next_power_of_2(x: f64) -> f64 {
    let q = ldexp(x, 1 - 53);
    let l = (q + x).abs();
    if l == 0.0 { x.abs() } else { l }
}

/// `pow2Scaled_D(a, m)`: a^m as a significand and a power of two, so that it neither overflows nor underflows.
fn pow2_scaled(a: Dd, m: i64) -> (Dd, i64) {
    if m <= 0 {
        if m == 0 {
            return (Dd::ONE, 0);
        }
        let (ans, e1) = pow2_scaled(a, -m);
        let (ans, e2) = Dd::ONE.div(ans).frexp();
        return (ans, -e1 + e2);
    }
    let (y, ye) = a.frexp();
    if m == 1 {
        return (y, ye);
    }
    let mut max_expt = SM_MAX_EXPONENT;
    if m as f64 * (y.hi - 1.0) / y.hi < -(SM_MAX_EXPONENT as f64) * std::f64::consts::LN_2 {
        let lg2y = y.hi.ln() / std::f64::consts::LN_2;
        if m as f64 * lg2y <= -(SM_MAX_EXPONENT as f64) {
            max_expt = (next_power_of_2(-(SM_MAX_EXPONENT as f64) / lg2y + 1.0) / 2.0) as i64;
        }
    }
    if m <= max_expt {
        let (ans, e) = pow_dd(y, m).frexp();
        return (ans, e + m * ye);
    }
    let (q, r) = (m / max_expt, m % max_expt);
    // y^m = (y^maxExpt)^q · y^r
    let (y2r, y2r_e) = pow2_scaled(y, r);
    let (y2m, y2m_e) = pow2_scaled(y, max_expt);
    let (y2mq, y2mq_e) = pow2_scaled(y2m, q);
    let (ans, e) = y2r.mul(y2mq).frexp();
    (ans, e + y2mq_e + y2m_e * q + y2r_e + m * ye)
}

/// log(2⁻¹⁰⁷⁵): exp of anything below is 0.
const MINLOG: f64 = -7.451_332_191_019_412e2;
/// Above this n, `smirnov` uses an approximation rather than the sum.
const SMIRNOV_MAX_COMPUTE_N: i64 = 1_000_000;

/// `scipy.special.smirnov(n, x)`: P(D⁺_n ≥ x), the one-sided Kolmogorov–Smirnov tail.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    if !(n > 0 && (0.0..=1.0).contains(&x)) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    // floor(n·x) and the remainder, exactly.
    let nx_dd = Dd::of(x).mul_f(n as f64);
    let floor_dd = nx_dd.floor();
    let mut alpha = nx_dd.add(floor_dd.neg()).hi;
    let mut nxfl = floor_dd.hi as i64;
    if alpha == 1.0 {
        nxfl += 1;
        alpha = 0.0;
    }
    let mut n1mxfl = n - nxfl - i64::from(alpha != 0.0);
    let mut n1mxceil = n - nxfl;
    // With no remainder the last term belongs to neither sum.
    if alpha == 0.0 {
        n1mxfl -= 1;
        n1mxceil += 1;
    }

    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        // x ≤ 1/n
        return 1.0 - x * pow2(1.0, x, n - 1);
    }
    if -2.0 * n as f64 * x * x < MINLOG {
        return 0.0;
    }
    if nxfl >= n - 1 {
        // x ≥ 1 − 1/n
        return pow2(1.0, -x, n);
    }
    let nf = n as f64;
    if n > SMIRNOV_MAX_COMPUTE_N {
        // p ~ e^(−(6nx + 1)² / 18n)
        let logp = -(6.0 * nf * x + 1.0).powf(2.0) / 18.0 / nf;
        // Whichever of sf and cdf is the smaller is computed directly, for precision.
        if logp < -std::f64::consts::LN_2 {
            return logp.exp();
        }
        let cdf = -logp.exp_m1();
        return 1.0 - cdf;
    }

    // The upper sum alternates in sign: only with few terms, for small x.
    let upper_terms = n - n1mxceil + 1;
    let use_upper = (upper_terms <= 1 && x < 0.5) || (n >= 10 && upper_terms <= 3 && x <= 0.5 / nf.sqrt());
    let (start, step, terms) = if use_upper { (n, -1, n - n1mxceil + 1) } else { (0, 1, n1mxfl + 1) };
    let first = if use_upper { pow4_dd(1.0, x, n - 1) } else { pow4_dd(1.0, -x, n).div_f(x) };
    let mut sum = Dd::of(0.0).add(first);
    let (mut cman, mut cexpt) = (Dd::ONE, 0i64);
    update_binomial(&mut cman, &mut cexpt, n, 0);
    for j in 1..terms {
        let v = start + j * step;
        let term = term_av(n, x, v, cman, cexpt);
        if term.hi.is_finite() && !term.is_zero() {
            sum = sum.add(term);
        }
        if !term.is_zero() {
            // Safe to stop once the remaining terms cannot change the sum.
            if (4 * (terms - j)) as f64 * term.hi.abs() < f64::EPSILON * sum.hi && j != terms - 1 {
                break;
            }
        } else if j > n / 2 {
            break;
        }
        update_binomial(&mut cman, &mut cexpt, n, j);
    }
    let prob = sum.mul_f(x).hi;
    let sf = if step < 0 { 1.0 - prob } else { prob };
    sf.clamp(0.0, 1.0)
}

/// `updateBinomial`: C(n, j+1) from C(n, j), kept as a significand and a power of two.
fn update_binomial(cman: &mut Dd, cexpt: &mut i64, n: i64, j: i64) {
    let rat = Dd::of((n - j) as f64).div_f(j as f64 + 1.0);
    let (man, e) = cman.mul(rat).frexp();
    *cexpt += e;
    *cman = man;
}

/// `computeAv`: A_v = C(n, v) (1 − x − v/n)^(n−v) (x + v/n)^(v−1).
fn term_av(n: i64, x: f64, v: i64, cman: Dd, cexpt: i64) -> Dd {
    let nf = n as f64;
    let (t2, t2e) = pow2_scaled(Dd::of((n - v) as f64).div_f(nf).sub_f(x), n - v);
    let (t1, t1e) = pow2_scaled(Dd::of(v as f64).div_f(nf).add_f(x), v - 1);
    t1.mul(t2).mul(cman).ldexp(cexpt + t1e + t2e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_p_value_is_the_computed_one() {
        // The memo is keyed by the sizes and the statistic's bits: the same question answers the same, a different
        // size or statistic is computed afresh.
        for (n1, n2, d) in [(1000, 120, 0.09), (1000, 120, 0.25), (999, 120, 0.09), (20_000, 150, 0.05)] {
            let computed = compute_two_sided_p_value(n1, n2, d);
            assert_eq!(two_sided_p_value(n1, n2, d).to_bits(), computed.to_bits(), "{n1} {n2} {d}");
            assert_eq!(two_sided_p_value(n1, n2, d).to_bits(), computed.to_bits(), "again: {n1} {n2} {d}");
        }
        assert!(two_sided_p_value(1000, 120, 0.25) < two_sided_p_value(1000, 120, 0.09));
        assert!(two_sided_p_value(0, 120, 0.1).is_nan());
    }

    #[test]
    fn known_scipy_values() {
        // scipy.stats.ks_2samp([1,2,3,4,5], [3,4,5,6,7,8]) → p-value 0.35714285714285715 (exact, unequal sizes).
        let p = ks_2samp(&[1., 2., 3., 4., 5.], &[3., 4., 5., 6., 7., 8.]);
        assert!((p - 0.357_142_857_142_857_15).abs() < 1e-12, "{p}");
        // Equal sizes take the square-path formula: ks_2samp([0..10), [5..15)) → p = 0.16782134274394334.
        let a: Vec<f64> = (0..10).map(f64::from).collect();
        let b: Vec<f64> = (5..15).map(f64::from).collect();
        let p = ks_2samp(&a, &b);
        assert!((p - 0.167_821_342_743_943_34).abs() < 1e-12, "{p}");
    }

    #[test]
    fn double_double_helpers_match_c() {
        assert_eq!(frexp(8.0), (0.5, 4));
        assert_eq!(frexp(-0.75), (-0.75, 0));
        assert_eq!(frexp(f64::MIN_POSITIVE / 4.0), (0.5, -1023));
        assert_eq!(ldexp(0.5, -1073), f64::from_bits(1));
        assert_eq!(ldexp(0.75, 4), 12.0);
        assert_eq!(ldexp(1.0, 5000), f64::INFINITY);
        let third = Dd::ONE.div_f(3.0);
        assert!((third.mul_f(3.0).add_f(-1.0)).hi.abs() < 1e-30);
    }

    /// scipy 1.17.1's p-values at (n1, n2, d) across every branch, made by `fixtures/make_drift.py`.
    #[test]
    fn p_values_equal_scipy() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drift/ks_pvalues.json");
        let text = std::fs::read_to_string(&path).expect("fixtures/drift/ks_pvalues.json");
        let fixture: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let mut failures = Vec::new();
        let mut worst = 0.0f64;
        let cases = fixture["cases"].as_array().expect("cases");
        for case in cases {
            let n1 = case["n1"].as_u64().expect("n1") as usize;
            let n2 = case["n2"].as_u64().expect("n2") as usize;
            let d = case["d"].as_f64().expect("d");
            let want = case["p"].as_f64().expect("p");
            let got = two_sided_p_value(n1, n2, d);
            let diff = (got - want).abs();
            worst = worst.max(diff);
            if diff > 1e-6 || diff.is_nan() {
                failures.push(format!("n1={n1} n2={n2} d={d:e}: ferry {got:e}, scipy {want:e}"));
            }
        }
        assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
        assert!(cases.len() >= 200, "the fixture spans the branches: {} cases", cases.len());
        eprintln!("{} cases, largest |Δp| = {worst:e}", cases.len());
    }
}
