//! Who leads: a pure decision, kept apart from the actors that act on it.

/// A worker that could lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub pid: u64,
    pub applied_seq: u64,
}

/// The new master: the candidate with the highest applied sequence number,
/// ties broken by the lowest pid (the original's rule), then the lowest id.
pub fn choose_master(candidates: &[Candidate]) -> Option<Candidate> {
    candidates
        .iter()
        .copied()
        .max_by_key(|c| (c.applied_seq, std::cmp::Reverse((c.pid, c.id))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, pid: u64, applied_seq: u64) -> Candidate {
        Candidate {
            id,
            pid,
            applied_seq,
        }
    }

    #[test]
    fn table() {
        let cases: &[(&[Candidate], Option<u64>)] = &[
            (&[], None),
            (&[c(1, 10, 0)], Some(1)),
            (&[c(1, 10, 5), c(2, 5, 7)], Some(2)),
            (&[c(1, 10, 7), c(2, 5, 7)], Some(2)),
            (&[c(3, 5, 7), c(2, 5, 7)], Some(2)),
            (&[c(1, 1, 3), c(2, 2, 9), c(3, 3, 9)], Some(2)),
        ];
        for (cands, want) in cases {
            assert_eq!(choose_master(cands).map(|c| c.id), *want, "{cands:?}");
        }
    }
}
