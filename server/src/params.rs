//! Query-string parameters, parsed strictly: unknown names and malformed values are 400s
//! that say what is wrong.

use prof_analysis::tree::{Axis, Filter, MarkerSelect, NativeMode};
use prof_analysis::Tier;

use crate::error::ApiError;

pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, _) in &pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad(format!(
                    "unknown parameter {k:?} (this endpoint takes: {})",
                    allowed.join(", ")
                )));
            }
        }
        Ok(Params(pairs))
    }

    /// The value of a single-valued parameter (an empty value counts as absent).
    pub fn get(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self
            .0
            .iter()
            .filter(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str());
        let first = it.next();
        if it.next().is_some() {
            return Err(ApiError::bad(format!("parameter {key:?} given twice")));
        }
        Ok(first)
    }

    /// Every value of a repeatable parameter, comma-separated lists split.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn u64_in(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad(format!(
                "parameter {key:?} must be an integer from {min} to {max}, not {v:?}"
            ))),
        }
    }

    pub fn seconds(&self, key: &str) -> Result<Option<f64>, ApiError> {
        let Some(v) = self.get(key)? else {
            return Ok(None);
        };
        match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => Ok(Some(s)),
            _ => Err(ApiError::bad(format!(
                "parameter {key:?} must be a number of seconds >= 0, not {v:?}"
            ))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key)? {
            None => Ok(false),
            Some("1" | "true" | "yes") => Ok(true),
            Some("0" | "false" | "no") => Ok(false),
            Some(v) => Err(ApiError::bad(format!(
                "parameter {key:?} must be true or false (1 or 0), not {v:?}"
            ))),
        }
    }

    pub fn string(&self, key: &str, max_len: usize) -> Result<Option<String>, ApiError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) if v.chars().count() > max_len => Err(ApiError::bad(format!(
                "parameter {key:?} is longer than {max_len} characters"
            ))),
            Some(v) => Ok(Some(v.to_string())),
        }
    }

    /// The sample filter shared by the tree, timeline and functions endpoints.
    pub fn filter(&self) -> Result<Filter, ApiError> {
        let tiers = self.all("tier");
        let tiers = if tiers.is_empty() {
            None
        } else {
            let mut out = Vec::new();
            for t in tiers {
                let tier = Tier::from_name(t).ok_or_else(|| {
                    ApiError::bad(format!(
                        "unknown tier {t:?} (tiers: {})",
                        Tier::ALL.map(|t| t.name()).join(", ")
                    ))
                })?;
                out.push(tier);
            }
            Some(out)
        };
        let axis = match self.get("axis")? {
            None => None,
            Some(a) => Some(Axis::from_name(a).ok_or_else(|| {
                ApiError::bad(format!("parameter \"axis\" must be cpu or wall, not {a:?}"))
            })?),
        };
        let from_s = self.seconds("from")?;
        let to_s = self.seconds("to")?;
        if let (Some(f), Some(t)) = (from_s, to_s) {
            if t < f {
                return Err(ApiError::bad(format!(
                    "the time range ends ({t} s) before it starts ({f} s)"
                )));
            }
        }
        Ok(Filter {
            process: self
                .u64_in("process", 0, u32::MAX as u64)?
                .map(|v| v as u32),
            thread: self.u64_in("thread", 0, u32::MAX as u64)?.map(|v| v as u32),
            tiers,
            from_s,
            to_s,
            axis,
            focus: self.string("focus", 4096)?,
            native: match self.get("native")? {
                None => NativeMode::Show,
                Some(v) => NativeMode::from_name(v).ok_or_else(|| {
                    ApiError::bad(format!(
                        "parameter \"native\" must be show or hide, not {v:?}"
                    ))
                })?,
            },
            markers: self.marker_select()?,
        })
    }

    /// [issue 14] `marker=NAME` (`*`: every name), `marker_min`/`marker_max` (duration,
    /// seconds), `marker_from`/`marker_to` (start on the timeline's axis, seconds): only
    /// samples inside the markers they select. None when no marker parameter is given.
    pub fn marker_select(&self) -> Result<Option<MarkerSelect>, ApiError> {
        let name = self.string("marker", 1024)?;
        let sel = MarkerSelect {
            name: name.filter(|n| n != "*"),
            min_s: self.seconds("marker_min")?,
            max_s: self.seconds("marker_max")?,
            from_s: self.seconds("marker_from")?,
            to_s: self.seconds("marker_to")?,
        };
        let any = self.get("marker")?.is_some()
            || sel.min_s.is_some()
            || sel.max_s.is_some()
            || sel.from_s.is_some()
            || sel.to_s.is_some();
        Ok(any.then_some(sel))
    }
}

/// Parameter names of [`Params::filter`].
pub const FILTER: [&str; 13] = [
    "process",
    "thread",
    "tier",
    "from",
    "to",
    "axis",
    "focus",
    "native",
    "marker",
    "marker_min",
    "marker_max",
    "marker_from",
    "marker_to",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        let p = Params::parse("process=12&tier=jit,warmup&tier=gc&from=0.5", &FILTER).unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.process, Some(12));
        assert_eq!(f.tiers, Some(vec![Tier::Jit, Tier::Warmup, Tier::Gc]));
        assert_eq!(f.from_s, Some(0.5));
        assert!(Params::parse("procss=1", &FILTER).is_err());
        let bad = |q: &str| {
            Params::parse(q, &FILTER)
                .and_then(|p| p.filter())
                .unwrap_err()
                .to_string()
        };
        assert!(bad("process=x").contains("must be an integer"));
        assert!(bad("process=1&process=2").contains("twice"));
        assert!(bad("tier=fast").contains("unknown tier \"fast\""));
        assert!(bad("from=-1").contains(">= 0"));
        assert!(bad("from=NaN").contains(">= 0"));
        assert!(bad("from=2&to=1").contains("before it starts"));
        assert!(bad("axis=x").contains("cpu or wall"));
        assert!(bad("native=no").contains("show or hide"));
        let hide = Params::parse("native=hide", &FILTER).unwrap();
        assert_eq!(hide.filter().unwrap().native, NativeMode::Hide);
        assert_eq!(
            Params::parse("process=", &FILTER)
                .unwrap()
                .filter()
                .unwrap(),
            Filter::default()
        );
    }
}
