//! The tier palette: web/palette.json, the one definition of the tiers' colours, read by
//! the viewer (as a JSON module), by the SVG/HTML exports and by the server's plain pages
//! (through [`tier_colour`]), so one profile has the same colours everywhere.

use std::sync::OnceLock;

use crate::tiers::Tier;

/// The palette file's text (the server serves it to the viewer as `/static/palette.json`).
pub const PALETTE_JSON: &str = include_str!("../../../web/palette.json");

struct Palette {
    tiers: [String; Tier::ALL.len()],
    diff: [String; 3],
}

fn palette() -> &'static Palette {
    static P: OnceLock<Palette> = OnceLock::new();
    P.get_or_init(|| {
        // The file is part of the source tree and checked by this module's test: a bad
        // file is a build defect, not input.
        let v: serde_json::Value = serde_json::from_str(PALETTE_JSON).expect("web/palette.json");
        let colour = |k: &str| v["colours"][k].as_str().expect("tier colour").to_string();
        let d = |k: &str| v["diff"][k].as_str().expect("diff colour").to_string();
        Palette {
            tiers: Tier::ALL.map(|t| colour(t.name())),
            diff: [d("less"), d("same"), d("more")],
        }
    })
}

/// The colour of a tier, `#rrggbb`.
pub fn tier_colour(t: Tier) -> &'static str {
    let i = Tier::ALL.iter().position(|&x| x == t).unwrap_or(0);
    &palette().tiers[i]
}

/// The differential colours: (less, same, more), `#rrggbb`.
pub fn diff_colours() -> (&'static str, &'static str, &'static str) {
    let d = &palette().diff;
    (&d[0], &d[1], &d[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_file_names_every_tier_in_api_order() {
        let v: serde_json::Value = serde_json::from_str(PALETTE_JSON).unwrap();
        let names: Vec<&str> = v["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(names, Tier::ALL.map(|t| t.name()));
        for t in Tier::ALL {
            let c = tier_colour(t);
            assert!(
                c.len() == 7 && c.starts_with('#') && u32::from_str_radix(&c[1..], 16).is_ok(),
                "{c}"
            );
            assert!(v["labels"][t.name()].is_string());
        }
        assert_eq!(tier_colour(Tier::Jit), "#0072b2");
        let (l, s, m) = diff_colours();
        assert!(l.starts_with('#') && s.starts_with('#') && m.starts_with('#'));
    }
}
