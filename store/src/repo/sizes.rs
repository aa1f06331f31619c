//! The row counts of bulk statements.
//!
//! A multi-row INSERT's text depends on its row count, and sqlx prepares
//! and caches one statement per text on each connection (100 per
//! connection). Batches of every size from 1 to 500 would each be prepared
//! anew, evicting one another: on MariaDB that turned a 5 ms bulk write
//! into 40–70 ms once the caches were full (the bench's lag run). Rounding
//! a statement's rows up to a few sizes keeps the statements each
//! connection sees to a handful per table.

/// The smallest size of the form 2^k or 3·2^k that holds `rows`: at most a
/// third of a statement is padding, and 500 rows need 18 sizes.
pub(crate) fn padded(rows: usize) -> usize {
    if rows <= 4 {
        return rows;
    }
    let power = rows.next_power_of_two();
    let three_quarters = power / 4 * 3;
    if rows <= three_quarters {
        three_quarters
    } else {
        power
    }
}

/// `items` followed by its last item repeated, [`padded`] items in all.
/// Only for statements where a repeated row changes nothing: the versioned
/// upserts (the repeat is not newer than the row it repeats) and the count
/// marks (a parent marked twice is recounted once).
pub(crate) fn pad<T>(items: &[T]) -> Vec<&T> {
    let repeats = padded(items.len()) - items.len();
    items
        .iter()
        .chain(items.last().into_iter().cycle().take(repeats))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_hold_the_rows_with_at_most_a_third_of_padding() {
        for rows in 1..=5000 {
            let size = padded(rows);
            assert!(size >= rows, "{rows} rows in {size}");
            // Padding is at most a third of the statement.
            assert!(2 * size <= 3 * rows, "{rows} rows padded to {size}");
        }
    }

    #[test]
    fn a_batch_of_up_to_500_rows_takes_one_of_18_sizes() {
        let sizes: std::collections::BTreeSet<_> = (1..=500).map(padded).collect();
        assert_eq!(sizes.len(), 18, "{sizes:?}");
    }

    #[test]
    fn padding_repeats_the_last_item() {
        let padded = |items: &[u8]| pad(items).into_iter().copied().collect::<Vec<_>>();
        assert_eq!(padded(&[1, 2, 3, 4, 5]), vec![1, 2, 3, 4, 5, 5]);
        assert_eq!(padded(&[7; 8]), vec![7; 8]);
        assert!(padded(&[]).is_empty());
    }
}
