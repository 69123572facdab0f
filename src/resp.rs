//! RESP2, the Redis wire format: commands out, replies in.
//!
//! The adapter's own pipelined connection ([`crate::pipe`]) writes commands encoded here and reads
//! replies with [`parse`], which works on whatever bytes have arrived so far: it returns `None`
//! until a whole reply is there, so a reply split across reads costs no copy and no state.

use redis::Value;

/// Deepest nesting of arrays accepted in a reply (Redis itself sends a few levels at most).
const MAX_DEPTH: usize = 64;

/// A reply that does not follow RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// One argument of a command: bytes, or parts written one after the other.
trait Arg {
    fn size(&self) -> usize;
    fn put(&self, out: &mut Vec<u8>);
}

impl Arg for &[u8] {
    fn size(&self) -> usize {
        self.len()
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl Arg for &[&[u8]] {
    fn size(&self) -> usize {
        self.iter().map(|p| p.len()).sum()
    }
    fn put(&self, out: &mut Vec<u8>) {
        for part in *self {
            out.extend_from_slice(part);
        }
    }
}

fn args_len<A: Arg>(args: &[A]) -> usize {
    header_len(args.len())
        + args
            .iter()
            .map(|a| header_len(a.size()) + a.size() + 2)
            .sum::<usize>()
}

fn encode_args<A: Arg>(args: &[A]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args_len(args));
    push_header(&mut out, b'*', args.len());
    for arg in args {
        push_header(&mut out, b'$', arg.size());
        arg.put(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The command made of `args`, in a buffer of exactly its size.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    encode_args(args)
}

/// The command whose arguments are each the concatenation of some parts, in a buffer of exactly
/// its size (so that a key made of a prefix and a name needs no buffer of its own).
pub fn encode_parts(args: &[&[&[u8]]]) -> Vec<u8> {
    encode_args(args)
}

/// The encoded size of the command made of `args`.
pub fn encoded_len(args: &[&[u8]]) -> usize {
    args_len(args)
}

fn header_len(n: usize) -> usize {
    1 + digits(n) + 2
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut buf = [0u8; 20];
    out.extend_from_slice(decimal(n as u64, &mut buf));
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `buf` (no allocation).
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The redis-rs command of a command packed by [`encode`] (for the links redis-rs drives).
pub fn unpack(packed: &[u8]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in args(packed).unwrap_or_default() {
        cmd.arg(arg);
    }
    cmd
}

/// The number after `marker` at `pos` (a RESP array or bulk string header), moving `pos` past
/// its line.
fn number(buf: &[u8], pos: &mut usize, marker: u8) -> Option<usize> {
    if buf.get(*pos) != Some(&marker) {
        return None;
    }
    let end = *pos + buf.get(*pos..)?.windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&buf[*pos + 1..end])
        .ok()?
        .parse()
        .ok()?;
    *pos = end + 2;
    Some(n)
}

/// The arguments of a command packed as RESP (an array of bulk strings), borrowed from it;
/// `None` when it is not one.
pub fn args(packed: &[u8]) -> Option<Vec<&[u8]>> {
    let mut pos = 0;
    let count = number(packed, &mut pos, b'*')?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let len = number(packed, &mut pos, b'$')?;
        args.push(packed.get(pos..pos + len)?);
        pos += len + 2;
    }
    Some(args)
}

/// The commands of `packed` when it holds several packed one after the other (a transaction
/// sent as one entry), each borrowed whole; `None` when it is not RESP arrays of bulk strings.
pub fn commands(packed: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < packed.len() {
        let rest = &packed[pos..];
        let len = command_len(rest)?;
        out.push(&rest[..len]);
        pos += len;
    }
    Some(out)
}

/// The length of the first packed command of `buf`.
fn command_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let count = number(buf, &mut pos, b'*')?;
    for _ in 0..count {
        let len = number(buf, &mut pos, b'$')?;
        pos += len + 2;
        if pos > buf.len() {
            return None;
        }
    }
    Some(pos)
}

/// The first whole reply in `buf` and the number of bytes it took, or `None` when more bytes are
/// needed. With `None`, `need` is raised to the buffer size the reply needs at least, when that
/// is known (a long bulk string), so the reader can grow its buffer once.
///
/// # Errors
/// [`ProtocolError`] when the bytes are not RESP2.
pub fn parse(buf: &[u8], need: &mut usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_at(buf, 0, 0, need)
}

fn parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
    need: &mut usize,
) -> Result<Option<(Value, usize)>, ProtocolError> {
    let Some(end) = line_end(buf, pos) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..end];
    let next = end + 2;
    let value = match buf[pos] {
        b'+' => {
            if line == b"OK" {
                Value::Okay
            } else {
                Value::SimpleString(String::from_utf8_lossy(line).into_owned())
            }
        }
        b'-' => server_error(&buf[pos..next])?,
        b':' => Value::Int(int(line)?),
        b'$' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = len as usize;
            let stop = next + len;
            if buf.len() < stop + 2 {
                *need = (*need).max(stop + 2);
                return Ok(None);
            }
            if &buf[stop..stop + 2] != b"\r\n" {
                return Err(ProtocolError(
                    "a bulk string is not followed by CRLF".to_owned(),
                ));
            }
            return Ok(Some((
                Value::BulkString(buf[next..stop].to_vec()),
                stop + 2,
            )));
        }
        b'*' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deeply".to_owned()));
            }
            // Do not trust the announced length for the allocation: each element takes 3 bytes
            // at least.
            let mut items = Vec::with_capacity((len as usize).min(buf.len() / 3 + 1));
            let mut at = next;
            for _ in 0..len {
                match parse_at(buf, at, depth + 1, need)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            return Ok(Some((Value::Array(items), at)));
        }
        other => {
            return Err(ProtocolError(format!(
                "unexpected reply type byte 0x{other:02x}"
            )))
        }
    };
    Ok(Some((value, next)))
}

/// The index of the `\r` ending the line that starts at `pos`.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let rest = buf.get(pos + 1..)?;
    let i = rest.iter().position(|&b| b == b'\n')?;
    let end = pos + 1 + i;
    (i > 0 && buf[end - 1] == b'\r').then_some(end - 1)
}

fn int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "expected an integer, got {:?}",
                String::from_utf8_lossy(line)
            ))
        })
}

/// An error reply, as redis-rs represents it (its kinds and codes), from the whole line.
fn server_error(line: &[u8]) -> Result<Value, ProtocolError> {
    match redis::parse_redis_value(line) {
        Ok(value @ Value::ServerError(_)) => Ok(value),
        _ => Err(ProtocolError("an error reply could not be read".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Value {
        let mut need = 0;
        let (v, used) = parse(bytes, &mut need).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        v
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(
            encode(&[b"SET", b"k", b""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        let long = vec![b'x'; 1234];
        let cmd = encode(&[b"GET", &long]);
        assert_eq!(cmd.len(), encoded_len(&[b"GET", &long]));
        assert!(cmd.starts_with(b"*2\r\n$3\r\nGET\r\n$1234\r\nxx"));
        assert_eq!(cmd, redis::cmd("GET").arg(&long[..]).get_packed_command());
        assert_eq!(unpack(&cmd).get_packed_command(), cmd);
        let parts = encode_parts(&[&[b"SET"], &[b"pre:", b"", b"key"], &[&long], &[]]);
        assert_eq!(parts, encode(&[b"SET", b"pre:key", &long, b""]));
        assert_eq!(parts.capacity(), parts.len(), "sized exactly");
    }

    #[test]
    fn parses_every_reply_kind() {
        assert_eq!(whole(b"+OK\r\n"), Value::Okay);
        assert_eq!(whole(b"+PONG\r\n"), Value::SimpleString("PONG".to_owned()));
        assert_eq!(whole(b":-42\r\n"), Value::Int(-42));
        assert_eq!(whole(b"$-1\r\n"), Value::Nil);
        assert_eq!(whole(b"*-1\r\n"), Value::Nil);
        assert_eq!(whole(b"$0\r\n\r\n"), Value::BulkString(vec![]));
        assert_eq!(
            whole(b"$5\r\na\r\nbc\r\n"),
            Value::BulkString(b"a\r\nbc".to_vec())
        );
        assert_eq!(
            whole(b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n"),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::BulkString(b"x".to_vec())]),
                Value::Nil
            ])
        );
        match whole(b"-WRONGTYPE Operation against a key\r\n") {
            Value::ServerError(e) => {
                assert_eq!(e.code(), "WRONGTYPE");
                assert_eq!(e.details(), Some("Operation against a key"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waits_for_the_whole_reply() {
        let full = b"*2\r\n$10\r\n0123456789\r\n:7\r\n";
        for cut in 0..full.len() {
            let mut need = 0;
            assert_eq!(parse(&full[..cut], &mut need), Ok(None), "cut at {cut}");
        }
        let mut need = 0;
        assert_eq!(parse(b"$100000\r\nabc", &mut need), Ok(None));
        assert_eq!(need, 9 + 100_000 + 2);
        // Two replies back to back: the first is taken alone.
        let mut need = 0;
        let (v, used) = parse(b":1\r\n:2\r\n", &mut need).unwrap().unwrap();
        assert_eq!((v, used), (Value::Int(1), 4));
    }

    #[test]
    fn refuses_what_is_not_resp2() {
        let mut need = 0;
        assert!(parse(b"?x\r\n", &mut need).is_err());
        assert!(parse(b":abc\r\n", &mut need).is_err());
        assert!(parse(b"$3\r\nabcde\r\n", &mut need).is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes(), &mut need).is_err());
        // A huge announced array does not allocate for its announced size.
        assert_eq!(parse(b"*999999999999\r\n:1\r\n", &mut need), Ok(None));
    }
}
