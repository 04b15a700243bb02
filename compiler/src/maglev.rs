//! Maglev consistent hashing (Eisenbud et al., NSDI 2016).
//!
//! A lookup table of prime size `M` is filled by letting each backend claim
//! slots in the order of its own permutation; a flow goes to
//! `table[flow_hash % M]`. Removing one of N backends moves only about 1/N
//! of the flows. The table is computed here, once, and used by the
//! interpreter and shipped to the back ends, so all agree on every flow.
//! Weights are honoured by letting a backend claim `weight` slots per turn.

use crate::model::Backend;

/// Default table size: a prime comfortably above 100 × a typical backend
/// count, as the paper recommends for ≤1% imbalance.
pub const TABLE_SIZE: u32 = 16_381;

fn fnv1a(bytes: &[u8], seed: u32) -> u32 {
    let mut h: u32 = 0x811C_9DC5 ^ seed;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn backend_key(b: &Backend) -> Vec<u8> {
    format!("{}:{}", b.addr, b.port).into_bytes()
}

/// The backends with a weight (indexes into `backends`) and each one's
/// permutation of a table of `m` slots, `(offset, skip)`: its candidate
/// slots are `(offset + j * skip) % m` for j = 0, 1, 2, …
fn permutations(backends: &[Backend], m: u64) -> (Vec<usize>, Vec<(u64, u64)>) {
    let live: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    let perm = live
        .iter()
        .map(|&i| {
            let key = backend_key(&backends[i]);
            let offset = u64::from(fnv1a(&key, 0xDEAD_BEEF)) % m;
            let skip = u64::from(fnv1a(&key, 0x0BAD_CAFE)) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    (live, perm)
}

/// Fill a Maglev table of `size` slots (size must be prime) with indexes
/// into `backends`. Backends with weight 0 get no slots. Returns an empty
/// table when no backend has a weight.
pub fn table(backends: &[Backend], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let (live, perm) = permutations(backends, m);
    if live.is_empty() {
        return Vec::new();
    }
    // `pos[k]` is `(offset + next * skip) % m` for backend k's next
    // candidate, advanced by adding `skip` (< m) and subtracting `m` once:
    // the same sequence as the paper's formula without a division per
    // probe.
    let mut pos: Vec<u64> = perm.iter().map(|&(offset, _)| offset).collect();
    let mut entry = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'outer: loop {
        for (k, &i) in live.iter().enumerate() {
            let skip = perm[k].1;
            for _ in 0..backends[i].weight {
                let mut c = pos[k];
                while entry[c as usize] != u32::MAX {
                    c += skip;
                    if c >= m {
                        c -= m;
                    }
                }
                entry[c as usize] = i as u32;
                c += skip;
                if c >= m {
                    c -= m;
                }
                pos[k] = c;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowhash::flow_hash;
    use crate::model::Proto;
    use std::net::IpAddr;

    /// The fill with the paper's formula, `(offset + next * skip) % m`
    /// per probe: `table` must give exactly the same slots.
    fn reference(backends: &[Backend], size: u32) -> Vec<u32> {
        let m = u64::from(size);
        let (live, perm) = permutations(backends, m);
        if live.is_empty() {
            return Vec::new();
        }
        let mut next = vec![0u64; live.len()];
        let mut entry = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        'outer: loop {
            for (k, &i) in live.iter().enumerate() {
                for _ in 0..backends[i].weight {
                    let (offset, skip) = perm[k];
                    let mut c = (offset + next[k] * skip) % m;
                    while entry[c as usize] != u32::MAX {
                        next[k] += 1;
                        c = (offset + next[k] * skip) % m;
                    }
                    entry[c as usize] = i as u32;
                    next[k] += 1;
                    filled += 1;
                    if filled == m {
                        break 'outer;
                    }
                }
            }
        }
        entry
    }

    #[test]
    fn incremental_fill_matches_the_formula() {
        for n in [1u8, 2, 3, 5, 10, 40] {
            let mut bs = backends(n);
            assert_eq!(table(&bs, TABLE_SIZE), reference(&bs, TABLE_SIZE), "{n}");
            assert_eq!(table(&bs, 251), reference(&bs, 251), "{n}");
            for (i, b) in bs.iter_mut().enumerate() {
                b.weight = (i % 4) as u16;
            }
            assert_eq!(
                table(&bs, TABLE_SIZE),
                reference(&bs, TABLE_SIZE),
                "{n} weighted"
            );
        }
    }

    fn backends(n: u8) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend {
                addr: IpAddr::from([10, 1, 0, i]),
                port: 8080,
                weight: 1,
                endpoint: None,
            })
            .collect()
    }

    #[test]
    fn removing_one_of_ten_moves_few_flows() {
        let all = backends(10);
        let mut fewer = all.clone();
        fewer.remove(3);
        let t1 = table(&all, TABLE_SIZE);
        let t2 = table(&fewer, TABLE_SIZE);
        let client: IpAddr = "172.16.0.1".parse().unwrap();
        let vip: IpAddr = "10.96.0.1".parse().unwrap();
        let mut moved = 0;
        for sport in 0..10_000u16 {
            let h = flow_hash(client, vip, 10_000 + sport, 80, Proto::Tcp) % TABLE_SIZE;
            let a = &all[t1[h as usize] as usize];
            let b = &fewer[t2[h as usize] as usize];
            if a != b {
                moved += 1;
            }
        }
        // 1/10 must move (the removed backend's flows); Maglev promises
        // little more than that.
        assert!(moved >= 900, "moved {moved}");
        assert!(moved <= 1_500, "moved {moved} of 10000");
    }

    #[test]
    fn balanced_and_weighted() {
        let mut b = backends(4);
        b[0].weight = 3;
        let t = table(&b, TABLE_SIZE);
        let mut count = [0u32; 4];
        for &e in &t {
            count[e as usize] += 1;
        }
        let unit = TABLE_SIZE / 6;
        assert!(count[0] > unit * 3 - unit / 5 && count[0] < unit * 3 + unit / 5);
        for &c in &count[1..] {
            assert!(c > unit - unit / 5 && c < unit + unit / 5, "{count:?}");
        }
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let mut b = backends(3);
        b[1].weight = 0;
        assert!(!table(&b, 13).contains(&1));
        b.iter_mut().for_each(|x| x.weight = 0);
        assert!(table(&b, 13).is_empty());
    }
}
