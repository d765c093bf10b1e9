//! The holdout: a stable, salted share of profiles that gets non-personal defaults, so the
//! lift of personalisation can be measured against it.

/// Whether `profile_id` is in the control group: the first 8 bytes of
/// SHA-256(`salt` + "\n" + `profile_id`) modulo 10 000 fall below `percent` × 100. The same
/// profile and salt always give the same answer; about `percent`% of profiles are held out.
pub fn in_holdout(profile_id: &str, salt: &str, percent: f64) -> bool {
    if percent.is_nan() || percent <= 0.0 {
        return false;
    }
    let hex = crate::identity::sha256_hex(format!("{salt}\n{profile_id}").as_bytes());
    let bucket = hex
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
        % 10_000;
    let threshold = (percent.min(100.0) * 100.0).round() as u64;
    bucket < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_deterministic_and_close_to_the_rate() {
        let held = (0..20_000)
            .filter(|i| in_holdout(&format!("prof_{i}"), "salt", 10.0))
            .count();
        assert!((1_800..=2_200).contains(&held), "{held} of 20000 at 10%");
        for i in 0..100 {
            let id = format!("prof_{i}");
            assert_eq!(in_holdout(&id, "salt", 10.0), in_holdout(&id, "salt", 10.0));
            assert!(!in_holdout(&id, "salt", 0.0));
            assert!(in_holdout(&id, "salt", 100.0));
            // Raising the percentage only adds profiles to the control group.
            assert!(!in_holdout(&id, "salt", 5.0) || in_holdout(&id, "salt", 10.0));
        }
        let other_salt = (0..1000)
            .filter(|i| {
                in_holdout(&format!("prof_{i}"), "salt", 50.0)
                    != in_holdout(&format!("prof_{i}"), "pepper", 50.0)
            })
            .count();
        assert!(other_salt > 300, "a new salt draws a new group");
    }
}
