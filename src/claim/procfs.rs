//! The abstract Unix socket names that `/proc/net/unix` shows, for when
//! the kernel's socket diagnostics cannot be asked (no `unix_diag` module,
//! or a sandbox that forbids netlink). The table says nothing of owners,
//! so every name read here is of an unknown owner.
//!
//! The table is read as bytes: a name may hold any byte, and one that is
//! not UTF-8 must not hide the others. A name that holds a newline shows
//! as two lines, and its second line may read as a name of its own; since
//! no name read here can refuse a start, that costs at most a line.

/// The fields of a table line before the path: `Num: RefCount Protocol
/// Flags Type St Inode`.
const FIELDS: usize = 7;

/// The abstract names in `table` (the text of `/proc/net/unix`) that start
/// with `prefix`, without their leading NUL (which the table shows as `@`).
pub(crate) fn names(table: &[u8], prefix: &[u8]) -> Vec<Vec<u8>> {
    table
        .split(|&b| b == b'\n')
        .filter_map(path)
        .filter_map(|path| path.strip_prefix(b"@"))
        .filter(|name| name.starts_with(prefix))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The path of one table line: what follows the space after its seventh
/// field, spaces included. The inode is padded with spaces to five digits,
/// so fields are separated by runs of spaces.
fn path(line: &[u8]) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..FIELDS {
        rest = rest.trim_ascii_start();
        let end = rest.iter().position(|&b| b == b' ')?;
        rest = &rest[end..];
    }
    rest.strip_prefix(b" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_bytes_from_the_table() {
        let table = b"\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00000000 0002 01 11 @drainport|127.0.0.1:8080|10|drainport
0000000000000000: 00000002 00000000 00000000 0001 07    12 @drainport|127.0.0.1:8080|11.ab|has space
0000000000000000: 00000002 00000000 00000000 0002 01 13 @drainport|x|1|\xff\x1b
0000000000000000: 00000002 00000000 00000000 0002 01 15 /run/systemd/notify
0000000000000000: 00000002 00000000 00000000 0002 01 16
0000000000000000: 00000002 00000000 00000000 0002 01 17 @other
";
        assert_eq!(
            names(table, b"drainport|"),
            [
                &b"drainport|127.0.0.1:8080|10|drainport"[..],
                b"drainport|127.0.0.1:8080|11.ab|has space",
                b"drainport|x|1|\xff\x1b",
            ]
        );
        assert_eq!(names(b"", b"drainport|"), Vec::<Vec<u8>>::new());
        assert_eq!(names(b"garbage\n\xff\xfe", b""), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn the_table_shows_a_name_bound_here() {
        let name = format!("drainport-procfs-test|{}|\u{ff}", std::process::id());
        let addr =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                name.as_bytes(),
            )
            .unwrap();
        let _socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        let table = std::fs::read("/proc/net/unix").unwrap();
        assert_eq!(names(&table, name.as_bytes()), [name.into_bytes()]);
    }
}
