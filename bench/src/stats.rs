//! Medians over repeats: these machines are noisy, so every figure in the table is the
//! median of its repeats rather than a mean that one slow run can drag.

/// The median of the finite values in `values` (the mean of the middle two for an even
/// count); `None` when there is no finite value.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The largest finite value; `None` when there is none.
pub fn max(values: &[f64]) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn median_ignores_non_finite_values() {
        assert_eq!(median(&[f64::NAN, 5.0, f64::INFINITY, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn max_ignores_non_finite_values() {
        assert_eq!(max(&[1.0, f64::NAN, 9.0, 2.0]), Some(9.0));
        assert_eq!(max(&[]), None);
    }
}
