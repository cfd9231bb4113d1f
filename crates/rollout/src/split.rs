//! Traffic splits. A deployment names versions of a model (by alias or number) with weights; each request goes to
//! one of them:
//! 1. an override (a header naming a variant, as Seldon's `x-seldon-route`) beats everything;
//! 2. else a sticky key (a header the client sets, such as a user id) picks a variant by a deterministic hash, so the
//!    same key always lands on the same variant;
//! 3. else a weighted random draw.
//!
//! Weights are kept in basis points (10,000 in all). The hash is GrowthBook's v2 bucketing
//! (`fnv1a32(str(fnv1a32(seed + key))) % 10000 / 10000`), and the candidates' ranges come first, before the primary's:
//! raising a candidate's weight during a ramp only extends its range, so no key already sent to the candidate is
//! ever moved back to the primary.

use serde::{Deserialize, Serialize};

/// All the weight there is, in basis points.
pub const TOTAL_BP: u32 = 10_000;

/// Most variants a deployment may have.
pub const MAX_VARIANTS: usize = 16;

/// A deployment as a person asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// The variants; the first is the primary (it serves whatever the others leave, and a rollback goes to it).
    pub variants: Vec<VariantSpec>,
    /// Header whose value keeps a client on one variant (for example `x-user-id`); without it, or for a request
    /// without that header, each request draws at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// A version that gets a copy of a share of the requests, off the request path; callers only ever see the
    /// variants' answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}

/// The shadow: a version by alias or number, and the percent of requests copied to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    /// An alias or a version number.
    pub target: String,
    /// Percent of requests copied, 0 to 100, at most two decimals.
    pub percent: f64,
}

/// One variant: a version by alias (`production`) or number (`3`), and its share in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// An alias or a version number.
    pub target: String,
    /// Percent of the traffic, 0 to 100, at most two decimals; the weights add up to 100.
    pub weight: f64,
}

/// Why a deployment or a route is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The deployment itself is malformed.
    #[error("deployment: {0}")]
    Invalid(String),
    /// An override names no variant.
    #[error("{header} {value:?} names no variant of this deployment (variants: {variants})")]
    UnknownVariant {
        /// The override header.
        header: &'static str,
        /// What it said.
        value: String,
        /// The variants there are.
        variants: String,
    },
}

impl DeploymentSpec {
    /// Parses the command line's `production=90,staging=10`.
    ///
    /// # Errors
    /// [`SplitError::Invalid`] naming the part that is wrong.
    pub fn parse_split(text: &str) -> Result<Vec<VariantSpec>, SplitError> {
        text.split(',')
            .map(|part| {
                let (target, weight) = part.split_once('=').ok_or_else(|| {
                    SplitError::Invalid(format!("{part:?} is not TARGET=PERCENT (for example production=90)"))
                })?;
                let weight: f64 = weight
                    .trim()
                    .parse()
                    .map_err(|_| SplitError::Invalid(format!("{weight:?} in {part:?} is not a percentage")))?;
                Ok(VariantSpec { target: target.trim().to_owned(), weight })
            })
            .collect()
    }

    /// Checks the deployment and turns its weights into basis points.
    ///
    /// # Errors
    /// [`SplitError::Invalid`] for no or too many variants, a repeated or empty target, a weight outside 0–100 or
    /// with more than two decimals, weights that do not add up to 100, or a malformed sticky header name.
    pub fn weights_bp(&self) -> Result<Vec<u32>, SplitError> {
        let invalid = |m: String| Err(SplitError::Invalid(m));
        if self.variants.is_empty() {
            return invalid("it needs at least one variant".into());
        }
        if self.variants.len() > MAX_VARIANTS {
            return invalid(format!("{} variants; at most {MAX_VARIANTS}", self.variants.len()));
        }
        let mut weights = Vec::with_capacity(self.variants.len());
        for (i, v) in self.variants.iter().enumerate() {
            if v.target.is_empty() || v.target.len() > 128 {
                return invalid(format!("variant {} has an empty or overlong target", i + 1));
            }
            if self.variants[..i].iter().any(|w| w.target == v.target) {
                return invalid(format!("{:?} is named twice", v.target));
            }
            if !v.weight.is_finite() || !(0.0..=100.0).contains(&v.weight) {
                return invalid(format!("the weight of {:?} is {}; it must be 0 to 100", v.target, v.weight));
            }
            let bp = v.weight * 100.0;
            if (bp - bp.round()).abs() > 1e-6 {
                return invalid(format!("the weight of {:?} has more than two decimals", v.target));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            weights.push(bp.round() as u32);
        }
        if let Some(shadow) = &self.shadow {
            if shadow.target.is_empty() || shadow.target.len() > 128 {
                return invalid("the shadow has an empty or overlong target".into());
            }
            basis_points(shadow.percent).ok_or_else(|| {
                SplitError::Invalid(format!(
                    "the shadow's percent is {}; it must be 0 to 100 with at most two decimals",
                    shadow.percent
                ))
            })?;
        }
        let total: u32 = weights.iter().sum();
        if total != TOTAL_BP {
            return invalid(format!("the weights add up to {}%, not 100%", f64::from(total) / 100.0));
        }
        if let Some(h) = &self.sticky_header
            && (h.is_empty() || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return invalid(format!("sticky_header {h:?} is not a header name (letters, digits, '-', '_')"));
        }
        Ok(weights)
    }
}

/// A deployment with every target resolved to a version: what the server routes by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Split {
    /// The variants, primary first.
    pub variants: Vec<Variant>,
    /// See [`DeploymentSpec::sticky_header`].
    pub sticky_header: Option<String>,
    /// The shadow, resolved.
    pub shadow: Option<Shadow>,
    /// Seed of the sticky hash (the model's name: the same key stays on its variant across weight changes).
    #[serde(skip)]
    pub seed: String,
}

/// A resolved variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Variant {
    /// The alias or number it was named by.
    pub target: String,
    /// The version it resolved to.
    pub version: u64,
    /// Share in basis points (of 10,000).
    pub weight_bp: u32,
}

/// A resolved shadow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shadow {
    /// The alias or number it was named by.
    pub target: String,
    /// The version it resolved to.
    pub version: u64,
    /// Share of requests copied, in basis points.
    pub share_bp: u32,
}

/// Which variant answers a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into [`Split::variants`].
    pub index: usize,
    /// The version.
    pub version: u64,
    /// `override`, `sticky` or `random`.
    pub reason: &'static str,
}

/// The header that names a variant for one request.
pub const OVERRIDE_HEADER: &str = "x-ferry-variant";

impl Split {
    /// Resolves `spec`'s targets with `resolve` (alias or number → version).
    ///
    /// # Errors
    /// The spec's own errors, a target `resolve` refuses, or two targets that are the same version.
    pub fn resolve(
        seed: &str,
        spec: &DeploymentSpec,
        mut resolve: impl FnMut(&str) -> Result<u64, String>,
    ) -> Result<Self, SplitError> {
        let weights = spec.weights_bp()?;
        let mut variants: Vec<Variant> = Vec::with_capacity(weights.len());
        for (v, weight_bp) in spec.variants.iter().zip(weights) {
            let version = resolve(&v.target).map_err(|e| SplitError::Invalid(format!("{:?}: {e}", v.target)))?;
            // Two targets on one version (a promotion moved an alias onto the candidate) are one variant with
            // both shares, under the first target's name.
            match variants.iter_mut().find(|w| w.version == version) {
                Some(same) => same.weight_bp += weight_bp,
                None => variants.push(Variant { target: v.target.clone(), version, weight_bp }),
            }
        }
        // Header names are case-insensitive (and gRPC metadata keys lower case).
        let sticky_header = spec.sticky_header.as_ref().map(|h| h.to_ascii_lowercase());
        let shadow = match &spec.shadow {
            Some(s) => Some(Shadow {
                target: s.target.clone(),
                version: resolve(&s.target).map_err(|e| SplitError::Invalid(format!("shadow {:?}: {e}", s.target)))?,
                share_bp: basis_points(s.percent).unwrap_or(0),
            }),
            None => None,
        };
        Ok(Self { variants, sticky_header, shadow, seed: seed.to_owned() })
    }

    /// The versions to keep loaded (every variant, weight 0 included: an override may still reach it).
    #[must_use]
    pub fn versions(&self) -> Vec<u64> {
        let mut versions: Vec<u64> = self.variants.iter().map(|v| v.version).collect();
        if let Some(s) = &self.shadow
            && !versions.contains(&s.version)
        {
            versions.push(s.version);
        }
        versions
    }

    /// The shadow version a request answered by `answering` is copied to, if it is drawn (`random` uniform in
    /// [0, 1)); never the version that answers it.
    #[must_use]
    pub fn mirror(&self, answering: u64, random: impl FnOnce() -> f64) -> Option<u64> {
        let shadow = self.shadow.as_ref().filter(|s| s.version != answering && s.share_bp > 0)?;
        (random() * f64::from(TOTAL_BP) < f64::from(shadow.share_bp)).then_some(shadow.version)
    }

    /// The primary's version.
    #[must_use]
    pub fn primary(&self) -> u64 {
        self.variants[0].version
    }

    /// Routes one request: `override_to` (a variant's target or version) first, then the sticky key, then
    /// `random` (uniform in [0, 1), drawn only when needed).
    ///
    /// # Errors
    /// [`SplitError::UnknownVariant`] when the override names no variant.
    pub fn choose(
        &self,
        override_to: Option<&str>,
        sticky_key: Option<&str>,
        random: impl FnOnce() -> f64,
    ) -> Result<Choice, SplitError> {
        if let Some(wanted) = override_to {
            let wanted = wanted.trim();
            let number = wanted.strip_prefix('v').unwrap_or(wanted).parse::<u64>().ok();
            let index = self.variants.iter().position(|v| v.target == wanted || Some(v.version) == number).ok_or_else(
                || SplitError::UnknownVariant {
                    header: OVERRIDE_HEADER,
                    value: wanted.to_owned(),
                    variants: self
                        .variants
                        .iter()
                        .map(|v| format!("{} (v{})", v.target, v.version))
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            )?;
            return Ok(Choice { index, version: self.variants[index].version, reason: "override" });
        }
        let (at, reason) = match sticky_key {
            Some(key) => (bucket_bp(&self.seed, key), "sticky"),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            None => (((random().clamp(0.0, 1.0) * f64::from(TOTAL_BP)) as u32).min(TOTAL_BP - 1), "random"),
        };
        let index = self.index_at(at);
        Ok(Choice { index, version: self.variants[index].version, reason })
    }

    /// The variant whose range holds basis point `at` (0 to 9,999): candidates' ranges first, in order, then the
    /// primary's. Whole basis points, so no boundary depends on rounding.
    fn index_at(&self, at: u32) -> usize {
        let mut end = 0;
        for (i, v) in self.variants.iter().enumerate().skip(1) {
            end += v.weight_bp;
            if at < end {
                return i;
            }
        }
        0
    }
}

/// GrowthBook's v2 hash of `seed + key` into [0, 1) in steps of 1/10,000.
#[must_use]
pub fn bucket(seed: &str, key: &str) -> f64 {
    f64::from(bucket_bp(seed, key)) / 10_000.0
}

/// [`bucket`] in basis points (0 to 9,999).
fn bucket_bp(seed: &str, key: &str) -> u32 {
    let inner = fnv1a32(seed.bytes().chain(key.bytes()));
    fnv1a32(inner.to_string().bytes()) % TOTAL_BP
}

/// A percentage with at most two decimals as basis points.
fn basis_points(percent: f64) -> Option<u32> {
    let bp = percent * 100.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (percent.is_finite() && (0.0..=100.0).contains(&percent) && (bp - bp.round()).abs() <= 1e-6)
        .then(|| bp.round() as u32)
}

/// 32-bit FNV-1a.
fn fnv1a32(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes.fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: &str) -> Split {
        let spec = DeploymentSpec {
            variants: DeploymentSpec::parse_split(parts).expect("parses"),
            sticky_header: None,
            shadow: None,
        };
        let mut next = 0;
        Split::resolve("iris", &spec, |t| {
            next += 1;
            Ok(t.parse().unwrap_or(next))
        })
        .expect("valid")
    }

    #[test]
    fn growthbook_v2_buckets_are_reproduced() {
        // Values of GrowthBook's Python SDK formula, `(fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000`.
        assert_eq!(bucket("iris", "user-1"), 0.8515);
        assert_eq!(bucket("", "a"), 0.0216);
        assert_eq!(bucket("seed", "42"), 0.6563);
        assert_eq!(fnv1a32("a".bytes()), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar".bytes()), 0xbf9c_f968);
    }

    #[test]
    fn weights_are_checked_precisely() {
        let bad = |s: &str| {
            let spec = DeploymentSpec {
                variants: DeploymentSpec::parse_split(s).expect("parses"),
                sticky_header: None,
                shadow: None,
            };
            spec.weights_bp().expect_err(s).to_string()
        };
        assert!(bad("production=90,staging=20").contains("add up to 110%"));
        assert!(bad("production=90.001,staging=9.999").contains("two decimals"));
        assert!(bad("production=-5,staging=105").contains("0 to 100"));
        assert!(bad("production=50,production=50").contains("named twice"));
        assert!(DeploymentSpec::parse_split("production:90").is_err());
        assert!(DeploymentSpec::parse_split("production=lots").is_err());
        let ok = DeploymentSpec {
            variants: DeploymentSpec::parse_split("production=99.5,staging=0.5").expect("parses"),
            sticky_header: None,
            shadow: None,
        };
        assert_eq!(ok.weights_bp().expect("valid"), vec![9_950, 50]);
    }

    #[test]
    fn random_draws_follow_the_weights_with_the_candidate_first() {
        let s = split("1=90,2=10");
        assert_eq!(s.choose(None, None, || 0.0).expect("routes").version, 2);
        assert_eq!(s.choose(None, None, || 0.0999).expect("routes").version, 2);
        assert_eq!(s.choose(None, None, || 0.1).expect("routes").version, 1);
        assert_eq!(s.choose(None, None, || 0.999_999).expect("routes").version, 1);
        let all_primary = split("1=100,2=0");
        assert!(
            (0..100).all(|i| all_primary.choose(None, None, || f64::from(i) / 100.0).expect("routes").version == 1)
        );
        let all_candidate = split("1=0,2=100");
        assert!(
            (0..100).all(|i| all_candidate.choose(None, None, || f64::from(i) / 100.0).expect("routes").version == 2)
        );
        assert_eq!(all_candidate.choose(None, None, || 1.0).expect("routes").version, 2);
    }

    #[test]
    fn a_sticky_key_never_moves_back_when_the_candidate_grows() {
        let steps: Vec<Split> = ["1=95,2=5", "1=75,2=25", "1=50,2=50", "1=0,2=100"].iter().map(|s| split(s)).collect();
        let mut on_candidate = 0;
        for user in 0..2_000 {
            let key = format!("user-{user}");
            let mut exposed = false;
            for s in &steps {
                let c = s.choose(None, Some(&key), || unreachable!("sticky needs no draw")).expect("routes");
                assert_eq!(c.reason, "sticky");
                // The same key lands on the same variant every time.
                assert_eq!(c, s.choose(None, Some(&key), || 0.5).expect("routes"));
                if exposed {
                    assert_eq!(c.version, 2, "{key} went back to the primary");
                }
                exposed |= c.version == 2;
            }
            on_candidate += usize::from(steps[0].choose(None, Some(&key), || 0.5).expect("routes").version == 2);
        }
        // 5% of 2,000 keys, give or take.
        assert!((60..=140).contains(&on_candidate), "{on_candidate} of 2000 keys on a 5% candidate");
    }

    #[test]
    fn an_override_names_a_variant_by_target_or_version() {
        let spec = DeploymentSpec {
            variants: DeploymentSpec::parse_split("production=90,staging=10").expect("parses"),
            sticky_header: None,
            shadow: None,
        };
        let s = Split::resolve("iris", &spec, |t| Ok(if t == "production" { 3 } else { 4 })).expect("valid");
        assert_eq!(
            s.choose(Some("staging"), Some("k"), || 0.9).expect("routes"),
            Choice { index: 1, version: 4, reason: "override" }
        );
        assert_eq!(s.choose(Some("3"), None, || 0.0).expect("routes").version, 3);
        assert_eq!(s.choose(Some("v4"), None, || 0.9).expect("routes").version, 4);
        let err = s.choose(Some("canary"), None, || 0.0).expect_err("unknown").to_string();
        assert!(err.contains("production (v3), staging (v4)"), "{err}");
    }

    #[test]
    fn two_targets_of_one_version_are_one_variant_and_unknown_targets_are_refused() {
        let spec = DeploymentSpec {
            variants: DeploymentSpec::parse_split("production=60,staging=30,3=10").expect("parses"),
            sticky_header: None,
            shadow: None,
        };
        let merged = Split::resolve("iris", &spec, |t| Ok(if t == "production" { 1 } else { 3 })).expect("merges");
        assert_eq!(
            merged.variants,
            vec![
                Variant { target: "production".into(), version: 1, weight_bp: 6_000 },
                Variant { target: "staging".into(), version: 3, weight_bp: 4_000 },
            ]
        );
        let err = Split::resolve("iris", &spec, |t| if t == "3" { Err("no such version".into()) } else { Ok(1) })
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("\"3\": no such version"), "{err}");
    }

    #[test]
    fn a_shadow_is_loaded_drawn_at_its_share_and_never_mirrors_the_version_that_answered() {
        let spec = DeploymentSpec {
            variants: DeploymentSpec::parse_split("1=90,2=10").expect("parses"),
            sticky_header: None,
            shadow: Some(ShadowSpec { target: "3".into(), percent: 25.0 }),
        };
        let s = Split::resolve("iris", &spec, |t| t.parse().map_err(|_| "no".to_owned())).expect("valid");
        assert_eq!(s.versions(), vec![1, 2, 3]);
        assert_eq!(s.mirror(1, || 0.2), Some(3));
        assert_eq!(s.mirror(1, || 0.25), None);
        let onto_itself =
            DeploymentSpec { shadow: Some(ShadowSpec { target: "2".into(), percent: 100.0 }), ..spec.clone() };
        let s = Split::resolve("iris", &onto_itself, |t| t.parse().map_err(|_| "no".to_owned())).expect("valid");
        assert_eq!((s.mirror(2, || 0.0), s.mirror(1, || 0.999)), (None, Some(2)));
        let bad = DeploymentSpec { shadow: Some(ShadowSpec { target: "3".into(), percent: 100.5 }), ..spec };
        assert!(bad.weights_bp().expect_err("over 100").to_string().contains("shadow's percent"));
    }
}
