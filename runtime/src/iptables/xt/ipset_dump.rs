//! Every set's index and family in one netlink dump (`IPSET_CMD_LIST`
//! with the header-only flag), instead of one `IP_SET_OP_GET_FNAME` per
//! set.
//!
//! The kernel finds a set by name with a linear search over its table of
//! sets (`find_set_and_id`), under the ipset mutex. A replace names the
//! ~6,800 sets of a 100,000-rule generation, and the new generation's
//! sets sit after the old one's in that table: one search per set was
//! 0.35–0.75 s of the loader's parse thread (measured, session 15). The
//! dump walks the table once and says, per set, its name, its family and
//! (since protocol 7) its index. Where the index is missing (an older
//! kernel) or the dump fails, the caller asks per set as before.
//!
//! The dump is only a faster way to the same answers: the family is
//! checked as `GET_FNAME`'s caller checks it, and the oracle tests compare
//! every loaded table with the tools' byte for byte.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::ipset_proto::*;

const SEQ: u32 = 0x7765_6972;

/// A set as the dump describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetHeader {
    pub index: u16,
    /// `NFPROTO_*` (2: IPv4, 10: IPv6).
    pub family: u8,
}

/// The request: `nlmsghdr`, `nfgenmsg`, the protocol and the flags
/// (`IPSET_ATTR_FLAGS`, none for a dump of every set with its members).
fn request(flags: u32) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, 0];
    body.extend_from_slice(&NFNL_SUBSYS_IPSET.to_be_bytes());
    put_attr(&mut body, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    if flags != 0 {
        put_attr(
            &mut body,
            IPSET_ATTR_FLAGS | NLA_F_NET_BYTEORDER,
            &flags.to_be_bytes(),
        );
    }
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_IPSET << 8) | IPSET_CMD_LIST).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&SEQ.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

/// Appends a netlink attribute (`nlattr`, padded to 4 bytes); the set
/// loader ([`super::ipset_load`]) writes its messages with it too.
pub(crate) fn put_attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(b.len() + (4 - len % 4) % 4, 0);
}

/// Dumps every set's header over the netlink socket `nl`
/// (`NETLINK_NETFILTER`, made in the namespace to read).
pub(crate) fn dump(nl: &OwnedFd) -> io::Result<HashMap<String, SetHeader>> {
    let mut sets = HashMap::new();
    dump_each(nl, LIST_HEADER, |m| {
        if let Some((name, h)) = header(m)? {
            sets.insert(name, h);
        }
        Ok(())
    })?;
    Ok(sets)
}

/// One `IPSET_CMD_LIST` dump over `nl` with `flags`
/// (`IPSET_FLAG_LIST_*`; 0: every set, headers and members): `each`
/// gets every message's payload after its `nlmsghdr` (`nfgenmsg`, then
/// the attributes), in the kernel's order, until the dump's end. An
/// error message, a reply to another request, a truncated message or
/// datagram, or an `Err` from `each` ends it with that error. The
/// header dump above and the sets' save ([`super::ipset_save`]) read
/// through here.
pub(crate) fn dump_each(
    nl: &OwnedFd,
    flags: u32,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let req = request(flags);
    // SAFETY: send(2) of a buffer we own, for its length.
    let n = unsafe { libc::send(nl.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 1 << 17];
    loop {
        // SAFETY: recv(2) into a buffer we own, at most its length;
        // MSG_TRUNC makes it return the datagram's real length.
        let n = unsafe {
            libc::recv(
                nl.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ipset dump: a datagram larger than the buffer",
            ));
        }
        if messages(&buf[..n as usize], &mut each)? {
            return Ok(());
        }
    }
}

/// Gives the messages of one datagram to `each`; `true` at the dump's
/// end.
fn messages(mut d: &[u8], each: &mut impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<bool> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ipset dump: {what}"));
    while d.len() >= 16 {
        let len = u32::from_ne_bytes(d[..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes([d[4], d[5]]);
        let seq = u32::from_ne_bytes(d[8..12].try_into().unwrap_or_default());
        if len < 16 || len > d.len() {
            return Err(bad("truncated message"));
        }
        if seq != SEQ {
            return Err(bad("a reply to another request"));
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = d
                    .get(16..20)
                    .map_or(0, |e| i32::from_ne_bytes(e.try_into().unwrap_or_default()));
                if errno == 0 {
                    return Err(bad("an ACK inside the dump"));
                }
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ => each(&d[16..len])?,
        }
        d = d.get((len + 3) & !3..).unwrap_or_default();
    }
    if !d.is_empty() {
        return Err(bad("truncated message"));
    }
    Ok(false)
}

/// The attributes of a message's body or of a nested attribute: (type
/// without its flags, payload); `None` if one runs past the end.
pub(crate) fn attrs(mut b: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        out.push((kind, &b[4..len]));
        b = b.get((len + 3) & !3..).unwrap_or_default();
    }
    b.is_empty().then_some(out)
}

/// One set's name and header from a message's `nfgenmsg` and attributes;
/// `None` without a name; `Err` without an index (protocol < 7).
fn header(m: &[u8]) -> io::Result<Option<(String, SetHeader)>> {
    let (mut name, mut family, mut index) = (None, None, None);
    for (kind, v) in attrs(m.get(4..).unwrap_or_default()).unwrap_or_default() {
        match kind {
            IPSET_ATTR_SETNAME => name = Some(super::table::c_name(v)),
            IPSET_ATTR_FAMILY if !v.is_empty() => family = Some(v[0]),
            IPSET_ATTR_INDEX if v.len() >= 2 => index = Some(u16::from_be_bytes([v[0], v[1]])),
            _ => {}
        }
    }
    let Some(name) = name else { return Ok(None) };
    match (index, family) {
        (Some(index), Some(family)) => Ok(Some((name, SetHeader { index, family }))),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "ipset dump without index or family (protocol < 7)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as the kernel writes it (6.18, recorded): set `a3`,
    /// hash:ip, family inet, index 2, then the dump's end.
    fn reply() -> Vec<u8> {
        let mut body = vec![2, 0, 0, 6];
        put_attr(&mut body, IPSET_ATTR_PROTOCOL, &[7]);
        put_attr(&mut body, IPSET_ATTR_SETNAME, b"a3\0");
        put_attr(&mut body, 3, b"hash:ip\0");
        put_attr(&mut body, IPSET_ATTR_FAMILY, &[2]);
        put_attr(&mut body, 4, &[6]);
        put_attr(&mut body, IPSET_ATTR_INDEX | NLA_F_NET_BYTEORDER, &[0, 2]);
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((6u16 << 8) | 7).to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&SEQ.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&body);
        let mut done = Vec::new();
        done.extend_from_slice(&20u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&2u16.to_ne_bytes());
        done.extend_from_slice(&SEQ.to_ne_bytes());
        done.extend_from_slice(&0u32.to_ne_bytes());
        done.extend_from_slice(&0i32.to_ne_bytes());
        m.extend_from_slice(&done);
        m
    }

    #[test]
    fn a_reply_gives_name_index_and_family() {
        let mut sets = HashMap::new();
        let mut each = |m: &[u8]| {
            if let Some((name, h)) = header(m)? {
                sets.insert(name, h);
            }
            Ok(())
        };
        assert!(messages(&reply(), &mut each).unwrap());
        assert_eq!(
            sets.get("a3"),
            Some(&SetHeader {
                index: 2,
                family: 2
            })
        );
    }

    #[test]
    fn a_header_without_index_is_unsupported() {
        let mut body = vec![2, 0, 0, 6];
        put_attr(&mut body, IPSET_ATTR_SETNAME, b"a3\0");
        put_attr(&mut body, IPSET_ATTR_FAMILY, &[2]);
        assert!(header(&body).is_err());
    }
}
