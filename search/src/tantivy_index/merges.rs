//! Which segments the writer merges, with a bound on the documents of
//! any one merge.
//!
//! A merge reads its source segments through their memory maps, and every
//! page it touches counts toward the process's resident memory until the
//! merge ends. tantivy's default policy merges levels of ever larger
//! segments, so an index of a million messages ended in one merge of most
//! of it: `chat serve` peaked at 380 MiB, 185 MiB of it mapped segments.
//! Merging at most [`MAX_DOCS_PER_MERGE`] documents at once bounds that
//! peak, at the cost of a few more segments for each search to visit.
use std::collections::HashMap;

use tantivy::{
    SegmentMeta,
    index::SegmentId,
    merge_policy::{LogMergePolicy, MergeCandidate, MergePolicy},
};

/// In the bench's decay run, merges of up to this many messages mapped
/// 15 to 40 MiB of segments at once.
pub(super) const MAX_DOCS_PER_MERGE: u32 = 100_000;

/// tantivy's log-sized levels, with every merge cut into runs of at most
/// `max_docs` documents.
#[derive(Debug)]
pub(super) struct BoundedMerges {
    levels: LogMergePolicy,
    max_docs: u32,
}

impl BoundedMerges {
    pub(super) fn new(max_docs: u32) -> Self {
        let mut levels = LogMergePolicy::default();
        // A segment of more than half the bound has nothing left to merge
        // with inside it: leave it be.
        levels.set_max_docs_before_merge(max_docs as usize / 2);
        Self { levels, max_docs }
    }
}

impl Default for BoundedMerges {
    fn default() -> Self {
        Self::new(MAX_DOCS_PER_MERGE)
    }
}

impl MergePolicy for BoundedMerges {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        // `max_doc` counts deleted documents too: they are in the files.
        let docs: HashMap<SegmentId, u32> =
            segments.iter().map(|s| (s.id(), s.max_doc())).collect();
        self.levels
            .compute_merge_candidates(segments)
            .into_iter()
            .flat_map(|candidate| runs(candidate.0, |id| docs[id], self.max_docs))
            .collect()
    }
}

/// Cuts one merge into consecutive runs of at most `max_docs` documents;
/// a run of one segment merges nothing and is dropped.
fn runs(
    ids: Vec<SegmentId>,
    docs: impl Fn(&SegmentId) -> u32,
    max_docs: u32,
) -> Vec<MergeCandidate> {
    let mut runs = Vec::new();
    let (mut run, mut total) = (Vec::new(), 0u32);
    for id in ids {
        let n = docs(&id);
        if !run.is_empty() && total.saturating_add(n) > max_docs {
            runs.push(std::mem::take(&mut run));
            total = 0;
        }
        run.push(id);
        total = total.saturating_add(n);
    }
    runs.push(run);
    runs.into_iter()
        .filter(|run| run.len() > 1)
        .map(MergeCandidate)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::{Index, schema::Schema};

    fn metas(sizes: &[u32]) -> Vec<SegmentMeta> {
        let index = Index::create_in_ram(Schema::builder().build());
        sizes
            .iter()
            .map(|&n| index.new_segment_meta(SegmentId::generate_random(), n))
            .collect()
    }

    fn merged_sizes(policy: &BoundedMerges, segments: &[SegmentMeta]) -> Vec<Vec<u32>> {
        let docs: HashMap<SegmentId, u32> =
            segments.iter().map(|s| (s.id(), s.max_doc())).collect();
        let mut merges: Vec<Vec<u32>> = policy
            .compute_merge_candidates(segments)
            .into_iter()
            .map(|c| {
                let mut sizes: Vec<u32> = c.0.iter().map(|id| docs[id]).collect();
                sizes.sort_unstable();
                sizes
            })
            .collect();
        merges.sort();
        merges
    }

    #[test]
    fn small_segments_merge_as_tantivy_would() {
        let policy = BoundedMerges::new(1_000);
        let segments = metas(&[10; 8]);
        assert_eq!(merged_sizes(&policy, &segments), vec![vec![10; 8]]);
    }

    #[test]
    fn a_level_over_the_bound_merges_in_runs_under_it() {
        let policy = BoundedMerges::new(1_000);
        // Eight segments of 400 would be one merge of 3,200 by default.
        let segments = metas(&[400; 8]);
        assert_eq!(merged_sizes(&policy, &segments), vec![vec![400, 400]; 4]);
    }

    #[test]
    fn segments_over_half_the_bound_are_left_alone() {
        let policy = BoundedMerges::new(1_000);
        let segments = metas(&[600; 8]);
        assert!(merged_sizes(&policy, &segments).is_empty());
    }

    #[test]
    fn a_lone_remainder_is_not_a_merge() {
        let sizes = [5u32, 5, 5];
        let ids: Vec<SegmentId> = (0..3).map(|_| SegmentId::generate_random()).collect();
        let docs: HashMap<SegmentId, u32> = ids.iter().cloned().zip(sizes).collect();
        let cut = runs(ids, |id| docs[id], 10);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].0.len(), 2);
    }
}
