//! Frames with what the parser must see through or refuse (docs/
//! language.md §4, "Headers"): IPv6 extension headers, IPv4 options, and
//! non-first fragments of both families, built from a whole frame of
//! `frames::frame`.

use weir_compiler::gen::Rng;

/// One IPv6 extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, this many bytes (a multiple of 8, PadN).
    HopByHop(usize),
    /// Destination options, this many bytes.
    DestOpts(usize),
    /// A routing header with no segments left (ignored by receivers).
    Routing,
    /// Authentication header (16 bytes: a 4-byte ICV).
    Ah,
    /// Fragment header: offset in 8-byte units, more-fragments flag.
    Fragment { offset: u16, more: bool },
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop(_) => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::Ah => 51,
            Ext::DestOpts(_) => 60,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop(n) | Ext::DestOpts(n) => {
                assert!(n >= 8 && n % 8 == 0);
                let mut h = vec![0u8; n];
                h[0] = next;
                h[1] = (n / 8 - 1) as u8;
                // One PadN option over the rest.
                h[2] = 1;
                h[3] = (n - 4) as u8;
                h
            }
            Ext::Routing => vec![next, 0, 253, 0, 0, 0, 0, 0],
            Ext::Ah => {
                let mut h = vec![0u8; 16];
                h[0] = next;
                h[1] = 2;
                h[4..8].copy_from_slice(&0x100u32.to_be_bytes());
                h[8..12].copy_from_slice(&1u32.to_be_bytes());
                h
            }
            Ext::Fragment { offset, more } => {
                let mut h = vec![0u8; 8];
                h[0] = next;
                let v = offset << 3 | u16::from(more);
                h[2..4].copy_from_slice(&v.to_be_bytes());
                h[4..8].copy_from_slice(&0x5eed_u32.to_be_bytes());
                h
            }
        }
    }
}

/// `frame` (IPv6) with `exts` inserted, in order, between the fixed
/// header and the upper-layer header.
pub fn with_extensions(frame: &[u8], exts: &[Ext]) -> Vec<u8> {
    assert_eq!(&frame[12..14], &[0x86, 0xdd], "an IPv6 frame");
    let upper = frame[20];
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(upper, |n| n.number());
        chain.extend(e.bytes(next));
    }
    let mut f = frame[..54].to_vec();
    f[20] = exts.first().map_or(upper, |e| e.number());
    let plen = u16::from_be_bytes([f[18], f[19]]) + chain.len() as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f.extend(chain);
    f.extend_from_slice(&frame[54..]);
    f
}

/// `frame` (IPv4) with `words` 4-byte words of options (NOPs, then an
/// end-of-list), header checksum fixed.
pub fn with_options(frame: &[u8], words: usize) -> Vec<u8> {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "an IPv4 frame");
    assert!(words <= 10);
    let mut f = frame[..34].to_vec();
    f[14] = 0x40 | (5 + words) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4 * words as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let mut opts = vec![1u8; 4 * words];
    if let Some(last) = opts.last_mut() {
        *last = 0;
    }
    f.extend(opts);
    f.extend_from_slice(&frame[34..]);
    super::set_checksums(&mut f);
    f
}

/// A non-first fragment of `frame` (offset 8 × `offset` bytes): IPv4 with
/// the fragment offset set, IPv6 with a Fragment header. What follows the
/// IP header is payload, not a transport header (the test frame's
/// transport header bytes are left there: the parser must not read them).
pub fn non_first_fragment(frame: &[u8], offset: u16) -> Vec<u8> {
    if frame[12..14] == [0x86, 0xdd] {
        return with_extensions(
            frame,
            &[Ext::Fragment {
                offset,
                more: false,
            }],
        );
    }
    let mut f = frame.to_vec();
    f[20..22].copy_from_slice(&(offset & 0x1fff).to_be_bytes());
    super::set_checksums(&mut f);
    f
}

/// 1–3 random extension headers that keep the packet whole (a first
/// fragment at most, and last before the upper-layer header).
pub fn random_chain(rng: &mut Rng) -> Vec<Ext> {
    let n = 1 + rng.below(3);
    let mut v: Vec<Ext> = (0..n)
        .map(|_| match rng.below(5) {
            0 => Ext::HopByHop(8 * (1 + rng.below(3))),
            1 => Ext::DestOpts(8 * (1 + rng.below(2))),
            2 => Ext::Routing,
            3 => Ext::Ah,
            _ => Ext::Fragment {
                offset: 0,
                more: true,
            },
        })
        .collect();
    // A fragment header is followed by the fragmentable part only.
    if let Some(i) = v.iter().position(|e| matches!(e, Ext::Fragment { .. })) {
        let f = v.remove(i);
        v.push(f);
    }
    v
}
