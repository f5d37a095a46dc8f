//! A message's identity and its cheap hasher.

use std::sync::Arc;

use super::Message;

/// A [`Message`]'s identity ([`MessageKey::of`]). It hashes cheaply: use
/// [`MessageKeyHasher`] as the map's hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageKey(usize);

impl MessageKey {
    /// The identity of `message`: equal for its clones, different from every
    /// other live message (each delivery is its own `Message`, so two
    /// deliveries of one SQS message differ). Runners key in-flight tables by
    /// it instead of hashing the receipt handle. Only meaningful while the
    /// message is alive: keep a clone next to the key. A message whose body
    /// was fetched from S3 ([`Message::with_payload`]) has the identity of
    /// the delivery it came in.
    #[inline]
    pub fn of(message: &Message) -> Self {
        Self(Arc::as_ptr(&message.delivery().inner) as usize)
    }
}

/// A [`Hasher`](std::hash::Hasher) for [`MessageKey`]s: one multiply (the
/// keys are addresses, unique already, and need no protection against
/// crafted collisions).
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageKeyHasher(u64);

impl std::hash::Hasher for MessageKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `MessageKey`; correct for anything else.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        // A folded 128-bit multiply spreads the address over every bit (the
        // low bits of aligned addresses are always zero).
        let m = u128::from(self.0 ^ n) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}
