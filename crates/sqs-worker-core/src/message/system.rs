//! The typed SQS system attributes and their decimal parser.

/// The SQS system attributes, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemAttributes {
    /// `ApproximateReceiveCount`.
    pub approximate_receive_count: Option<u32>,
    /// `SentTimestamp`, milliseconds since the Unix epoch.
    pub sent_timestamp: Option<u64>,
    /// `ApproximateFirstReceiveTimestamp`, milliseconds since the Unix epoch.
    pub approximate_first_receive_timestamp: Option<u64>,
    /// `MessageGroupId`.
    pub message_group_id: Option<String>,
    /// `MessageDeduplicationId`.
    pub message_deduplication_id: Option<String>,
    /// `SequenceNumber`.
    pub sequence_number: Option<String>,
    /// `AWSTraceHeader`.
    pub aws_trace_header: Option<String>,
    /// `SenderId`.
    pub sender_id: Option<String>,
    /// `DeadLetterQueueSourceArn`.
    pub dead_letter_queue_source_arn: Option<String>,
}

impl SystemAttributes {
    /// Sets an attribute from its SQS name and text value. Unknown names are
    /// ignored; a number that does not parse leaves the field unset.
    #[inline]
    pub fn set(&mut self, name: &str, value: String) {
        match name {
            "ApproximateReceiveCount" => self.approximate_receive_count = parse_decimal(&value),
            "SentTimestamp" => self.sent_timestamp = parse_decimal(&value),
            "ApproximateFirstReceiveTimestamp" => {
                self.approximate_first_receive_timestamp = parse_decimal(&value)
            }
            "MessageGroupId" => self.message_group_id = Some(value),
            "MessageDeduplicationId" => self.message_deduplication_id = Some(value),
            "SequenceNumber" => self.sequence_number = Some(value),
            "AWSTraceHeader" => self.aws_trace_header = Some(value),
            "SenderId" => self.sender_id = Some(value),
            "DeadLetterQueueSourceArn" => self.dead_letter_queue_source_arn = Some(value),
            _ => {}
        }
    }

    /// Builds the attributes from `(name, value)` pairs.
    pub fn from_pairs<I, K>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, String)>,
        K: AsRef<str>,
    {
        let mut attrs = Self::default();
        for (k, v) in pairs {
            attrs.set(k.as_ref(), v);
        }
        attrs
    }
}

/// `s.parse::<T>().ok()` for an unsigned integer type.
// Eight digits at a time, no per-digit overflow check below 20 digits
// (BENCHMARKS.md); 9 to 16 digits (timestamps have 13) as two chunks of eight.
pub(crate) fn parse_decimal<T: TryFrom<u64> + std::str::FromStr>(s: &str) -> Option<T> {
    let digits = s.strip_prefix('+').unwrap_or(s).as_bytes();
    let n = match digits.len() {
        0 | 20.. => return s.parse().ok(),
        1..=8 => each_digit(0, digits)?,
        len @ 9..=16 => {
            let (head, tail) = digits.split_at(len - 8);
            high_chunk(head, digits)? * 100_000_000 + chunk(tail)?
        }
        len => {
            let (head, rest) = digits.split_at(len - 16);
            let (mid, tail) = rest.split_at(8);
            let n = each_digit(0, head)?;
            (n * 100_000_000 + chunk(mid)?) * 100_000_000 + chunk(tail)?
        }
    };
    T::try_from(n).ok()
}

/// `n` followed by `digits`, one digit at a time.
#[inline]
fn each_digit(mut n: u64, digits: &[u8]) -> Option<u64> {
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

/// The value of eight ASCII digits.
#[inline]
fn chunk(eight: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = eight.try_into().ok()?;
    eight_digits(u64::from_le_bytes(bytes))
}

/// The value of `head` (1 to 8 digits), the start of `all` (at least 8
/// bytes): the first eight bytes of `all` with those after `head` shifted
/// out and `'0'`s shifted in before it.
#[inline]
fn high_chunk(head: &[u8], all: &[u8]) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let k = head.len() as u32;
    let first = all.first_chunk::<8>()?;
    let w = u64::from_le_bytes(*first) << (8 * (8 - k));
    // `8 * k` may be 64: shifted in two steps.
    eight_digits(w | (ZEROS >> 8 >> (8 * (k - 1))))
}

/// The value of eight ASCII digits read as a little-endian `u64` (first digit
/// in the lowest byte), or `None` if any byte is not a digit.
#[inline]
fn eight_digits(chunk: u64) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Every byte 0x30..=0x3F, and still 0x3_ after adding 6 (so ≤ 0x39);
    // adding 6 to bytes ≤ 0x3F never carries into the next byte.
    let high = 0xF0 * ONES;
    if chunk & high != 0x30 * ONES || (chunk + 6 * ONES) & high != 0x30 * ONES {
        return None;
    }
    let v = chunk - 0x30 * ONES;
    // Pairs, then quads, then all eight: each step multiplies the more
    // significant half and adds the other.
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10_000 + (v >> 32)) & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parsing_matches_std() {
        for s in [
            "",
            "+",
            "-1",
            "0",
            "+7",
            "4294967295",
            "4294967296",
            "1545082649183",
            "18446744073709551615",
            "18446744073709551616",
            "00000000000000000000001",
            "12345678",
            "1234567890123",
            "9999999999999999999",
            "99999999999999999",
            "1000000000000000",
            "100000000",
            "1234567/",
            "1234567:",
            "12345678a",
            "0000000012345678",
            "1a",
            " 1",
            "++1",
            "٣",
        ] {
            assert_eq!(parse_decimal::<u32>(s), s.parse::<u32>().ok(), "{s:?}");
            assert_eq!(parse_decimal::<u64>(s), s.parse::<u64>().ok(), "{s:?}");
        }
    }

    #[test]
    fn decimal_parsing_checks_every_byte_of_a_chunk() {
        // Each position of 8- and 13-digit numbers, set to every ASCII byte.
        for base in [
            "12345678",
            "123456789",
            "1700000000123",
            "1234567890123456",
            "12345678901234567",
            "1234567890123456789",
        ] {
            for pos in 0..base.len() {
                for b in 0u8..0x80 {
                    let mut bytes = base.as_bytes().to_vec();
                    bytes[pos] = b;
                    let s = String::from_utf8(bytes).unwrap();
                    assert_eq!(parse_decimal::<u64>(&s), s.parse::<u64>().ok(), "{s:?}");
                }
            }
        }
    }
}
