//! Just enough of the Redis protocol (RESP) to write raw bytes into a list and read a few
//! replies, on a plain TCP connection: hostile messages go below every client library.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reply.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// One connection to a Redis server, on the database of the URL.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `redis://host:port/db` (no password: the fault suite's own servers).
    pub fn open(url: &str) -> crate::Result<Self> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("not a redis:// URL: {url}"))?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (address, db) = rest.split_once('/').unwrap_or((rest, "0"));
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut connection = Self {
            reader: BufReader::new(stream),
        };
        if !db.is_empty() && db != "0" {
            connection.command(&[b"SELECT", db.as_bytes()])?;
        }
        Ok(connection)
    }

    /// Sends one command and reads its reply; an error reply is an error.
    pub fn command(&mut self, parts: &[&[u8]]) -> crate::Result<Reply> {
        let mut request = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            request.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            request.extend_from_slice(part);
            request.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&request)?;
        match read(&mut self.reader)? {
            Reply::Error(message) => Err(format!("redis: {message}").into()),
            reply => Ok(reply),
        }
    }
}

fn read(reader: &mut impl BufRead) -> crate::Result<Reply> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.len() < 3 {
        return Err("redis closed the connection".into());
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || -> crate::Result<i64> {
        text.parse()
            .map_err(|_| format!("bad RESP number {text:?}").into())
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Integer(number()?),
        b'$' => match number()? {
            n if n < 0 => Reply::Bulk(None),
            n => {
                let mut data = vec![0; n as usize + 2];
                std::io::Read::read_exact(reader, &mut data)?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match number()? {
            n if n < 0 => Reply::Array(Vec::new()),
            n => (0..n)
                .map(|_| read(reader))
                .collect::<crate::Result<Vec<_>>>()
                .map(Reply::Array)?,
        },
        other => return Err(format!("unexpected RESP type byte {other}").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_replies() {
        let mut input: &[u8] = b"*3\r\n$3\r\nabc\r\n:42\r\n$-1\r\n";
        assert_eq!(
            read(&mut input).unwrap(),
            Reply::Array(vec![
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Integer(42),
                Reply::Bulk(None)
            ])
        );
        let mut error: &[u8] = b"-WRONGTYPE no\r\n";
        assert_eq!(
            read(&mut error).unwrap(),
            Reply::Error("WRONGTYPE no".into())
        );
    }
}
