//! The numbers of ipset's netlink protocol (`linux/netfilter/ipset/ip_set.h`,
//! protocol 7) and of netlink itself that the set loader
//! ([`super::ipset_load`]), the dumps ([`super::ipset_dump`]) and the set
//! printer ([`super::ipset_save`]) use: one place, so the three speak the
//! same protocol.

pub(crate) const NFNL_SUBSYS_IPSET: u16 = 6;
pub(crate) const IPSET_CMD_LIST: u16 = 7;
pub(crate) const IPSET_PROTOCOL: u8 = 7;
pub(crate) const IPSET_ATTR_PROTOCOL: u16 = 1;
pub(crate) const IPSET_ATTR_SETNAME: u16 = 2;
pub(crate) const IPSET_ATTR_FAMILY: u16 = 5;
pub(crate) const IPSET_ATTR_FLAGS: u16 = 6;
pub(crate) const IPSET_ATTR_INDEX: u16 = 11;
/// `IPSET_FLAG_LIST_HEADER`: headers only, no members.
pub(crate) const LIST_HEADER: u32 = 1 << 2;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub(crate) const NLA_TYPE_MASK: u16 = !((1 << 15) | NLA_F_NET_BYTEORDER);
pub(crate) const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const IPSET_CMD_CREATE: u16 = 2;
pub(crate) const IPSET_CMD_DESTROY: u16 = 3;
pub(crate) const IPSET_CMD_ADD: u16 = 9;
pub(crate) const IPSET_CMD_TYPE: u16 = 13;
pub(crate) const IPSET_ATTR_TYPENAME: u16 = 3;
pub(crate) const IPSET_ATTR_REVISION: u16 = 4;
pub(crate) const IPSET_ATTR_DATA: u16 = 7;
pub(crate) const IPSET_ATTR_ADT: u16 = 8;
pub(crate) const IPSET_ATTR_LINENO: u16 = 9;
pub(crate) const IPSET_ATTR_REVISION_MIN: u16 = 10;
pub(crate) const IPSET_ATTR_IP: u16 = 1;
pub(crate) const IPSET_ATTR_CIDR: u16 = 3;
pub(crate) const IPSET_ATTR_CADT_FLAGS: u16 = 8;
pub(crate) const IPSET_ATTR_HASHSIZE: u16 = 18;
pub(crate) const IPSET_ATTR_MAXELEM: u16 = 19;
pub(crate) const IPSET_ATTR_SKBMARK: u16 = 27;
pub(crate) const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub(crate) const IPSET_ATTR_IPADDR_IPV6: u16 = 2;
pub(crate) const IPSET_FLAG_NOMATCH: u32 = 1 << 2;
pub(crate) const IPSET_FLAG_WITH_SKBINFO: u32 = 1 << 6;
pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLM_F_ACK: u16 = 4;
pub(crate) const SOL_NETLINK: i32 = 270;
pub(crate) const NETLINK_CAP_ACK: i32 = 10;
pub(crate) const IPSET_ATTR_INITVAL: u16 = 17;
pub(crate) const IPSET_ATTR_BUCKETSIZE: u16 = 21;
pub(crate) const IPSET_ATTR_ELEMENTS: u16 = 24;
pub(crate) const IPSET_ATTR_REFERENCES: u16 = 25;
pub(crate) const IPSET_ATTR_MEMSIZE: u16 = 26;
