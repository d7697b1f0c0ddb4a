// SPDX-License-Identifier: MPL-2.0
//! The VP8 RTP payload format (RFC 7741) as a sender writes it: the payload
//! descriptor at the start of each packet, the PictureID that numbers the
//! frames, and how a frame is cut into packets.
//!
//! Nothing here looks inside a VP8 frame. A frame is a run of bytes cut where
//! the MTU says, and every descriptor says partition 0 (PID=0, the one choice
//! that needs no parsing, RFC 7741 section 4.4), so frames whose bytes after
//! the codec header are encrypted are sent as they are. The keyframe bit that
//! receivers read is in the frame's own first byte, not in the descriptor.

use std::num::NonZeroUsize;
use std::ops::Range;

/// A fixed RTP header (RFC 3550) without CSRCs.
pub const RTP_HEADER_LEN: usize = 12;
/// Each CSRC adds this much to the RTP header.
pub const CSRC_LEN: usize = 4;

/// How the payload descriptor numbers frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PictureIdMode {
    /// No PictureID (and no extension byte unless another field needs it).
    None,
    /// A 7-bit PictureID (M=0).
    SevenBit,
    /// A 15-bit PictureID (M=1), what browsers send.
    #[default]
    FifteenBit,
}

impl PictureIdMode {
    /// The largest PictureID of this mode; the next one is 0.
    pub fn max(self) -> u16 {
        match self {
            PictureIdMode::None => 0,
            PictureIdMode::SevenBit => 0x7f,
            PictureIdMode::FifteenBit => 0x7fff,
        }
    }
}

/// The PictureID one frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PictureId {
    Absent,
    /// 0..=0x7f.
    SevenBit(u8),
    /// 0..=0x7fff.
    FifteenBit(u16),
}

/// The PictureIDs of successive frames: one per frame, wrapping to 0 after
/// the mode's largest value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PictureIdCounter {
    mode: PictureIdMode,
    next: u16,
}

impl PictureIdCounter {
    /// Frames numbered from `first`, cut to the mode's bits (as any start
    /// value, random or given, must be).
    pub fn new(mode: PictureIdMode, first: u16) -> Self {
        Self {
            mode,
            next: first & mode.max(),
        }
    }

    pub fn mode(&self) -> PictureIdMode {
        self.mode
    }

    /// The PictureID the next frame gets (0 when the mode has none).
    pub fn peek(&self) -> u16 {
        self.next
    }

    /// The next frame's PictureID; the counter moves on to the one after.
    pub fn take(&mut self) -> PictureId {
        let id = self.next;
        self.skip();
        match self.mode {
            PictureIdMode::None => PictureId::Absent,
            PictureIdMode::SevenBit => PictureId::SevenBit(id as u8),
            PictureIdMode::FifteenBit => PictureId::FifteenBit(id),
        }
    }

    /// Leaves a PictureID out, so that receivers see a frame is missing
    /// (after a gap or a flush).
    pub fn skip(&mut self) {
        self.next = self.next.wrapping_add(1) & self.mode.max();
    }
}

/// The longest descriptor written here: the fixed byte, the extension byte
/// and a 15-bit PictureID.
pub const MAX_DESCRIPTOR_LEN: usize = 4;

/// The RFC 7741 payload descriptor at the start of each packet's payload.
/// PID (the partition index) is always 0 and L, T and K are never set: this
/// sender knows nothing of partitions or temporal layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadDescriptor {
    /// S: this packet starts the frame.
    pub start: bool,
    /// N: no other frame refers to this one, so a receiver or an SFU may drop it.
    pub non_reference: bool,
    pub picture_id: PictureId,
}

impl PayloadDescriptor {
    const X: u8 = 0x80;
    const N: u8 = 0x20;
    const S: u8 = 0x10;
    const I: u8 = 0x80;
    const M: u8 = 0x80;

    /// Its length in bytes: 1, 3 (7-bit PictureID) or 4 (15-bit PictureID).
    pub fn encoded_len(&self) -> usize {
        match self.picture_id {
            PictureId::Absent => 1,
            PictureId::SevenBit(_) => 3,
            PictureId::FifteenBit(_) => 4,
        }
    }

    /// Its bytes, in the first `encoded_len()` bytes of the array.
    pub fn encode(&self) -> [u8; MAX_DESCRIPTOR_LEN] {
        let mut bytes = [0u8; MAX_DESCRIPTOR_LEN];
        if self.start {
            bytes[0] |= Self::S;
        }
        if self.non_reference {
            bytes[0] |= Self::N;
        }
        match self.picture_id {
            PictureId::Absent => {}
            PictureId::SevenBit(id) => {
                bytes[0] |= Self::X;
                bytes[1] = Self::I;
                bytes[2] = id & 0x7f;
            }
            PictureId::FifteenBit(id) => {
                bytes[0] |= Self::X;
                bytes[1] = Self::I;
                bytes[2..4].copy_from_slice(&(id & 0x7fff).to_be_bytes());
                bytes[2] |= Self::M;
            }
        }
        bytes
    }

    /// Writes its bytes at the start of `out`, which must have room for them.
    pub fn write(&self, out: &mut [u8]) {
        let len = self.encoded_len();
        out[..len].copy_from_slice(&self.encode()[..len]);
    }
}

/// How many bytes of frame fit in one packet of at most `mtu` bytes, after
/// the RTP header with `csrc_count` CSRCs and a descriptor of
/// `descriptor_len` bytes; None when not even one byte fits (RFC 7741 packets
/// carry at least one byte of frame).
pub fn frame_bytes_per_packet(
    mtu: usize,
    csrc_count: usize,
    descriptor_len: usize,
) -> Option<NonZeroUsize> {
    let overhead = RTP_HEADER_LEN + CSRC_LEN * csrc_count + descriptor_len;
    NonZeroUsize::new(mtu.saturating_sub(overhead))
}

/// One packet of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub descriptor: PayloadDescriptor,
    /// The bytes of the frame it carries, right after the descriptor.
    pub frame_range: Range<usize>,
    /// The RTP marker bit: the last packet of the frame.
    pub marker: bool,
}

/// The packets of one frame of `frame_len` bytes, each carrying at most
/// `max_frame_bytes` bytes of it: as few packets as that allows, their sizes
/// differing by at most one byte (so the last one is not a near-empty tail).
/// An empty frame has no packets.
pub fn packetize(
    frame_len: usize,
    max_frame_bytes: NonZeroUsize,
    picture_id: PictureId,
    non_reference: bool,
) -> impl ExactSizeIterator<Item = Packet> {
    let count = frame_len.div_ceil(max_frame_bytes.get());
    // No packets (and no division by zero) for an empty frame.
    let base = frame_len.checked_div(count).unwrap_or(0);
    let longer = frame_len.checked_rem(count).unwrap_or(0);
    (0..count).map(move |index| {
        // The first `longer` packets carry one byte more than the others.
        let start = index * base + index.min(longer);
        let len = base + usize::from(index < longer);
        Packet {
            descriptor: PayloadDescriptor {
                start: index == 0,
                non_reference,
                picture_id,
            },
            frame_range: start..start + len,
            marker: index + 1 == count,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    fn descriptor(start: bool, non_reference: bool, picture_id: PictureId) -> Vec<u8> {
        let d = PayloadDescriptor {
            start,
            non_reference,
            picture_id,
        };
        let mut out = vec![0xee; d.encoded_len()];
        d.write(&mut out);
        out
    }

    #[test]
    fn descriptor_bytes_follow_rfc7741() {
        // X R N S R PID | I L T K RSV | M PictureID
        assert_eq!(
            descriptor(true, false, PictureId::FifteenBit(0x1234)),
            hex("90 80 92 34")
        );
        assert_eq!(
            descriptor(false, false, PictureId::FifteenBit(0x7fff)),
            hex("80 80 ff ff")
        );
        assert_eq!(
            descriptor(false, false, PictureId::FifteenBit(0)),
            hex("80 80 80 00")
        );
        assert_eq!(
            descriptor(true, true, PictureId::FifteenBit(5)),
            hex("b0 80 80 05")
        );
        assert_eq!(
            descriptor(true, false, PictureId::SevenBit(0x7f)),
            hex("90 80 7f")
        );
        assert_eq!(
            descriptor(false, true, PictureId::SevenBit(0)),
            hex("a0 80 00")
        );
        assert_eq!(descriptor(true, false, PictureId::Absent), hex("10"));
        assert_eq!(descriptor(false, false, PictureId::Absent), hex("00"));
    }

    #[test]
    fn picture_ids_increment_and_wrap_at_the_mode_bits() {
        let mut ids = PictureIdCounter::new(PictureIdMode::FifteenBit, 0x7ffe);
        let taken: Vec<_> = (0..4).map(|_| ids.take()).collect();
        assert_eq!(
            taken,
            [0x7ffe, 0x7fff, 0, 1].map(PictureId::FifteenBit).to_vec()
        );
        assert_eq!(ids.peek(), 2);

        let mut ids = PictureIdCounter::new(PictureIdMode::SevenBit, 0x7e);
        let taken: Vec<_> = (0..3).map(|_| ids.take()).collect();
        assert_eq!(taken, [0x7e, 0x7f, 0].map(PictureId::SevenBit).to_vec());

        let mut ids = PictureIdCounter::new(PictureIdMode::None, 1234);
        assert_eq!(ids.take(), PictureId::Absent);
        assert_eq!(ids.peek(), 0);
    }

    #[test]
    fn a_start_value_is_cut_to_the_mode_bits() {
        assert_eq!(
            PictureIdCounter::new(PictureIdMode::FifteenBit, 0xffff).peek(),
            0x7fff
        );
        assert_eq!(
            PictureIdCounter::new(PictureIdMode::SevenBit, 0x1234).peek(),
            0x34
        );
    }

    #[test]
    fn skipping_leaves_a_picture_id_out() {
        let mut ids = PictureIdCounter::new(PictureIdMode::FifteenBit, 0x7fff);
        ids.skip();
        assert_eq!(ids.take(), PictureId::FifteenBit(0));
    }

    #[test]
    fn room_for_frame_bytes_counts_header_csrcs_and_descriptor() {
        assert_eq!(frame_bytes_per_packet(1200, 0, 4).unwrap().get(), 1184);
        assert_eq!(frame_bytes_per_packet(200, 2, 3).unwrap().get(), 177);
        assert_eq!(frame_bytes_per_packet(17, 0, 4).unwrap().get(), 1);
        assert_eq!(frame_bytes_per_packet(16, 0, 4), None);
        assert_eq!(frame_bytes_per_packet(28, 15, 4), None);
    }

    #[test]
    fn small_frames_are_one_packet_with_start_and_marker() {
        let max = NonZeroUsize::new(100).unwrap();
        let packets: Vec<_> = packetize(100, max, PictureId::FifteenBit(9), false).collect();
        assert_eq!(
            packets,
            [Packet {
                descriptor: PayloadDescriptor {
                    start: true,
                    non_reference: false,
                    picture_id: PictureId::FifteenBit(9),
                },
                frame_range: 0..100,
                marker: true,
            }]
        );
        assert_eq!(packetize(0, max, PictureId::Absent, false).len(), 0);
    }

    #[test]
    fn fragments_are_balanced() {
        let max = NonZeroUsize::new(100).unwrap();
        let ranges: Vec<_> = packetize(201, max, PictureId::Absent, false)
            .map(|p| p.frame_range)
            .collect();
        assert_eq!(ranges, [0..67, 67..134, 134..201]);
    }

    /// Every frame length up to a few packets, against every small room: the
    /// packets cover the frame in order, none is over the room or empty, there
    /// are as few as the room allows, and only the first has S and only the
    /// last the marker.
    #[test]
    fn packets_cover_each_frame_exactly() {
        for max in 1..=40 {
            let max_bytes = NonZeroUsize::new(max).unwrap();
            for frame_len in 0..=(max * 5 + 3) {
                let packets: Vec<_> =
                    packetize(frame_len, max_bytes, PictureId::SevenBit(3), true).collect();
                assert_eq!(packets.len(), frame_len.div_ceil(max), "{frame_len}/{max}");
                let mut next = 0;
                for (i, p) in packets.iter().enumerate() {
                    assert_eq!(p.frame_range.start, next, "{frame_len}/{max}");
                    assert!(!p.frame_range.is_empty(), "{frame_len}/{max}");
                    assert!(p.frame_range.len() <= max, "{frame_len}/{max}");
                    assert_eq!(p.descriptor.start, i == 0);
                    assert_eq!(p.marker, i + 1 == packets.len());
                    assert!(p.descriptor.non_reference);
                    assert_eq!(p.descriptor.picture_id, PictureId::SevenBit(3));
                    next = p.frame_range.end;
                }
                assert_eq!(next, frame_len);
            }
        }
    }
}
