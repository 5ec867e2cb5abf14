//! Snowflake worker IDs across every ChatCluster: each cluster gets a range
//! `base .. base + size` that overlaps no other cluster's, within the 1024 IDs of 10 bits.
//! A pod's worker ID is the range's base plus its StatefulSet ordinal.

use crate::MAX_WORKERS;
use crate::resources::WorkerIdRange;

/// Why a cluster gets no range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The cluster alone asks for more than 1024 workers.
    TooMany { wanted: i32 },
    /// No free stretch is large enough.
    Exhausted { wanted: i32, largest_free: i32 },
}

impl std::fmt::Display for AllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocError::TooMany { wanted } => {
                write!(
                    f,
                    "{wanted} worker IDs requested; Snowflake IDs allow at most {MAX_WORKERS} per installation"
                )
            }
            AllocError::Exhausted {
                wanted,
                largest_free,
            } => write!(
                f,
                "no free range of {wanted} worker IDs is left (the largest is {largest_free}); \
                 other ChatClusters hold the rest of the {MAX_WORKERS}"
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// The range size for `replicas`: a power of two of at least 8, so small scale-ups keep
/// their range.
pub fn range_size(replicas: i32) -> i32 {
    (replicas.max(1) as u32).next_power_of_two().max(8) as i32
}

/// The range for a cluster with `replicas`, given its `current` range (kept when it is
/// still large enough) and the ranges of every other cluster.
pub fn allocate(
    replicas: i32,
    current: Option<WorkerIdRange>,
    others: &[WorkerIdRange],
) -> Result<WorkerIdRange, AllocError> {
    let max = i32::from(MAX_WORKERS);
    if replicas > max {
        return Err(AllocError::TooMany { wanted: replicas });
    }
    let overlaps = |r: WorkerIdRange| {
        others
            .iter()
            .any(|o| r.base < o.base + o.size && o.base < r.base + r.size)
    };
    if let Some(c) = current
        && c.size >= replicas
        && c.base >= 0
        && c.base + c.size <= max
        && !overlaps(c)
    {
        return Ok(c);
    }
    let size = range_size(replicas).min(max);
    // First fit over the free stretches, in order.
    let mut taken: Vec<WorkerIdRange> = others.to_vec();
    taken.sort_by_key(|r| r.base);
    let mut cursor = 0;
    let mut largest_free = 0;
    for r in taken
        .iter()
        .chain(std::iter::once(&WorkerIdRange { base: max, size: 0 }))
    {
        let free = r.base - cursor;
        if free >= size {
            return Ok(WorkerIdRange { base: cursor, size });
        }
        if free >= replicas {
            // Not the preferred size, but enough.
            return Ok(WorkerIdRange {
                base: cursor,
                size: free,
            });
        }
        largest_free = largest_free.max(free);
        cursor = cursor.max(r.base + r.size);
    }
    Err(AllocError::Exhausted {
        wanted: replicas,
        largest_free,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(base: i32, size: i32) -> WorkerIdRange {
        WorkerIdRange { base, size }
    }

    #[test]
    fn ranges_never_overlap_and_stay_put() {
        let a = allocate(3, None, &[]).unwrap();
        assert_eq!(a, r(0, 8));
        let b = allocate(20, None, &[a]).unwrap();
        assert_eq!(b, r(8, 32));
        let c = allocate(5, None, &[a, b]).unwrap();
        assert_eq!(c, r(40, 8));
        // Scaling within the range keeps it; beyond, the cluster moves to a free stretch.
        assert_eq!(allocate(8, Some(a), &[b, c]).unwrap(), a);
        let a2 = allocate(9, Some(a), &[b, c]).unwrap();
        assert_eq!(a2, r(48, 16));
        // A freed stretch is reused.
        assert_eq!(allocate(6, None, &[a2, b, c]).unwrap(), r(0, 8));
    }

    #[test]
    fn the_1024_limit_is_enforced() {
        assert_eq!(
            allocate(1025, None, &[]),
            Err(AllocError::TooMany { wanted: 1025 })
        );
        assert_eq!(allocate(1024, None, &[]).unwrap(), r(0, 1024));
        let big = r(0, 1000);
        let err = allocate(30, None, &[big]).unwrap_err();
        assert_eq!(
            err,
            AllocError::Exhausted {
                wanted: 30,
                largest_free: 24
            }
        );
        assert!(err.to_string().contains("1024"));
        assert_eq!(
            allocate(20, None, &[big]).unwrap(),
            r(1000, 24),
            "a smaller fit is fine"
        );
    }
}
