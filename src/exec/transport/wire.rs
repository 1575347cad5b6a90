//! What crosses between processes, as bytes: tensors (f32 data with their shape), message tags,
//! the workers' epoch reports, and a fingerprint of what a run reads. Little-endian, fixed
//! widths, no framing beyond what the transport's messages give; a transport between processes
//! (MPI) sends these, and the in-process one never needs them.

use candle_core::{DType, Device, Tensor};

use super::Tag;
use crate::exec::crew::EpochReport;
use crate::schedule::lower::Payload;
use crate::schedule::{Op, OpKind};
use crate::trace::{MemoryCategory, MemoryEvent, Span, SpanKind};

/// Bytes being written.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    /// A 32-bit unsigned integer.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A 64-bit unsigned integer.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A float, bit for bit.
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    /// A tensor: its rank, dimensions and f32 elements in row-major order.
    pub fn tensor(&mut self, tensor: &Tensor) -> candle_core::Result<()> {
        self.dims(tensor.dims());
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.0.reserve(4 * values.len());
        for v in values {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// A shape: its rank, then its dimensions.
    pub fn dims(&mut self, dims: &[usize]) {
        self.u32(dims.len() as u32);
        dims.iter().for_each(|&d| self.u64(d as u64));
    }

    /// A message tag.
    pub fn tag(&mut self, tag: Tag) {
        self.u8(payload_code(tag.payload));
        self.op(tag.to);
        self.u32(tag.from_chunk);
        self.u32(tag.from_stage);
    }

    fn op(&mut self, op: Op) {
        self.u8(kind_code(op.kind));
        self.u32(op.chunk);
        self.u32(op.stage);
    }
}

/// Bytes being read; every read fails, rather than panics, past the end or on a code no writer
/// writes.
#[derive(Debug)]
pub struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'b [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> candle_core::Result<&'b [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            candle_core::bail!(
                "a message ends after {} bytes where {} more were expected",
                self.bytes.len(),
                n
            );
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// A byte.
    pub fn u8(&mut self) -> candle_core::Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A 32-bit unsigned integer.
    pub fn u32(&mut self) -> candle_core::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A 64-bit unsigned integer.
    pub fn u64(&mut self) -> candle_core::Result<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// A float, bit for bit.
    pub fn f64(&mut self) -> candle_core::Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// A tensor on `device`.
    pub fn tensor(&mut self, device: &Device) -> candle_core::Result<Tensor> {
        let (dims, n) = self.dims()?;
        let values: Vec<f32> = self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_vec(values, dims, device)
    }

    /// A shape, with its number of f32 elements (an error when their bytes overflow).
    pub fn dims(&mut self) -> candle_core::Result<(Vec<usize>, usize)> {
        let rank = self.u32()? as usize;
        let dims = (0..rank)
            .map(|_| self.u64().map(|d| d as usize))
            .collect::<candle_core::Result<Vec<usize>>>()?;
        let n = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n.checked_mul(4).is_some())
            .ok_or_else(|| candle_core::Error::Msg(format!("a tensor of shape {dims:?}")))?;
        Ok((dims, n))
    }

    /// A message tag.
    pub fn tag(&mut self) -> candle_core::Result<Tag> {
        let payload = payload_of(self.u8()?)?;
        let to = self.op()?;
        Ok(Tag {
            payload,
            to,
            from_chunk: self.u32()?,
            from_stage: self.u32()?,
        })
    }

    fn op(&mut self) -> candle_core::Result<Op> {
        Ok(Op {
            kind: kind_of(self.u8()?)?,
            chunk: self.u32()?,
            stage: self.u32()?,
        })
    }

    /// Whether every byte has been read.
    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

const PAYLOADS: [Payload; 3] = [Payload::Activation, Payload::Gradient, Payload::Weights];
const KINDS: [OpKind; 5] = [
    OpKind::Forward,
    OpKind::Backward,
    OpKind::Optimizer,
    OpKind::InputGrad,
    OpKind::WeightGrad,
];

fn payload_code(payload: Payload) -> u8 {
    PAYLOADS
        .iter()
        .position(|&p| p == payload)
        .expect("PAYLOADS lists every payload") as u8
}

fn payload_of(code: u8) -> candle_core::Result<Payload> {
    PAYLOADS
        .get(code as usize)
        .copied()
        .ok_or_else(|| candle_core::Error::Msg(format!("no payload has code {code}")))
}

fn kind_code(kind: OpKind) -> u8 {
    KINDS
        .iter()
        .position(|&k| k == kind)
        .expect("KINDS lists every op kind") as u8
}

fn kind_of(code: u8) -> candle_core::Result<OpKind> {
    KINDS
        .get(code as usize)
        .copied()
        .ok_or_else(|| candle_core::Error::Msg(format!("no op kind has code {code}")))
}

/// A worker's epoch report as bytes; its parameters as f32 tensors.
pub(in crate::exec) fn encode_report(report: &EpochReport) -> candle_core::Result<Vec<u8>> {
    let mut w = Writer::default();
    w.u64(report.device as u64);
    w.f64(report.loss);
    w.u64(report.clock_skew_ns);
    w.u64(report.spans.len() as u64);
    for s in &report.spans {
        match s.kind {
            SpanKind::Compute(kind) => {
                w.u8(0);
                w.u8(kind_code(kind));
            }
            SpanKind::Transfer(payload) => {
                w.u8(1);
                w.u8(payload_code(payload));
            }
        }
        w.u32(u32::from(s.hop));
        for v in [s.lane_index, s.chunk, s.stage, s.device] {
            w.u32(v);
        }
        for v in [s.start_ns, s.end_ns, s.bytes, s.requested_ns] {
            w.u64(v);
        }
    }
    w.u64(report.memory.len() as u64);
    for m in &report.memory {
        w.u32(m.device);
        w.u64(m.time_ns);
        w.u8(m.category.index() as u8);
        w.u64(m.delta_bytes as u64);
    }
    w.u64(report.params.len() as u64);
    for (stage, tensors) in &report.params {
        w.u32(*stage);
        w.u64(tensors.len() as u64);
        for t in tensors {
            w.tensor(t)?;
        }
    }
    Ok(w.0)
}

/// The report `encode_report` wrote, its parameters on the CPU.
pub(in crate::exec) fn decode_report(bytes: &[u8]) -> candle_core::Result<EpochReport> {
    let mut r = Reader::new(bytes);
    let device = r.u64()? as usize;
    let loss = r.f64()?;
    let clock_skew_ns = r.u64()?;
    // Counts are bounded by the bytes left, so a corrupt count fails on reading, not on
    // allocating.
    let n = bounded(r.u64()?, bytes.len())?;
    let mut spans = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = match (r.u8()?, r.u8()?) {
            (0, code) => SpanKind::Compute(kind_of(code)?),
            (1, code) => SpanKind::Transfer(payload_of(code)?),
            (what, _) => candle_core::bail!("no span kind has code {what}"),
        };
        let hop = r.u32()? as u16;
        let (lane_index, chunk, stage, device) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        let (start_ns, end_ns, bytes, requested_ns) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        spans.push(Span {
            kind,
            hop,
            lane_index,
            chunk,
            stage,
            device,
            start_ns,
            end_ns,
            bytes,
            requested_ns,
        });
    }
    let n = bounded(r.u64()?, bytes.len())?;
    let mut memory = Vec::with_capacity(n);
    for _ in 0..n {
        let device = r.u32()?;
        let time_ns = r.u64()?;
        let code = r.u8()?;
        let category = *MemoryCategory::ALL
            .get(code as usize)
            .ok_or_else(|| candle_core::Error::Msg(format!("no memory category {code}")))?;
        memory.push(MemoryEvent {
            device,
            time_ns,
            category,
            delta_bytes: r.u64()? as i64,
        });
    }
    let n = bounded(r.u64()?, bytes.len())?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        let stage = r.u32()?;
        let k = bounded(r.u64()?, bytes.len())?;
        let tensors = (0..k)
            .map(|_| r.tensor(&Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()?;
        params.push((stage, tensors));
    }
    if !r.is_done() {
        candle_core::bail!("a report has bytes past its end");
    }
    Ok(EpochReport {
        device,
        spans,
        memory,
        params,
        loss,
        clock_skew_ns,
    })
}

fn bounded(count: u64, bytes: usize) -> candle_core::Result<usize> {
    if count > bytes as u64 {
        candle_core::bail!("a message counts {count} items in {bytes} bytes");
    }
    Ok(count as usize)
}

/// FNV-1a over 64 bits: a fingerprint of what a run reads, for ranks to check they hold the
/// same (not a defence against anyone crafting a collision).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds `bytes`.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Adds each of `values` as 8 bytes.
    pub fn u64s(&mut self, values: impl IntoIterator<Item = u64>) {
        for v in values {
            self.bytes(&v.to_le_bytes());
        }
    }

    /// The fingerprint.
    pub fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_tags_and_reports_survive_the_wire() -> candle_core::Result<()> {
        let t = Tensor::new(
            &[[1f32, -2.5, f32::MIN_POSITIVE], [3.0, 4.0, 1e-30]],
            &Device::Cpu,
        )?;
        let tag = Tag {
            payload: Payload::Gradient,
            to: Op::backward(3, 1),
            from_chunk: 3,
            from_stage: 2,
        };
        let mut w = Writer::default();
        w.tag(tag);
        w.tensor(&t)?;
        let mut r = Reader::new(&w.0);
        assert_eq!(r.tag()?, tag);
        let back = r.tensor(&Device::Cpu)?;
        assert_eq!(back.dims(), t.dims());
        assert_eq!(back.to_vec2::<f32>()?, t.to_vec2::<f32>()?);
        assert!(r.is_done());
        // Cut short anywhere, it fails rather than panics.
        for cut in 0..w.0.len() {
            let mut r = Reader::new(&w.0[..cut]);
            assert!(r.tag().and_then(|_| r.tensor(&Device::Cpu)).is_err());
        }

        let report = EpochReport {
            device: 1,
            spans: vec![
                crate::exec::ledger::compute_span(Op::forward(2, 1), 1, 10, 20),
                Span {
                    kind: SpanKind::Transfer(Payload::Activation),
                    hop: 1,
                    lane_index: 4,
                    chunk: 2,
                    stage: 2,
                    device: 0,
                    start_ns: 21,
                    end_ns: 30,
                    bytes: 4096,
                    requested_ns: 20,
                },
            ],
            memory: vec![MemoryEvent {
                device: 1,
                time_ns: 5,
                category: MemoryCategory::Communication,
                delta_bytes: -4096,
            }],
            params: vec![(1, vec![t.clone(), Tensor::new(&[0.5f32], &Device::Cpu)?])],
            loss: 0.1 + 0.2,
            clock_skew_ns: 1234,
        };
        let back = decode_report(&encode_report(&report)?)?;
        assert_eq!(back.device, 1);
        assert_eq!(back.loss.to_bits(), report.loss.to_bits());
        assert_eq!(back.clock_skew_ns, 1234);
        assert_eq!(back.spans, report.spans);
        assert_eq!(back.memory, report.memory);
        assert_eq!(back.params.len(), 1);
        assert_eq!(back.params[0].0, 1);
        assert_eq!(back.params[0].1[0].to_vec2::<f32>()?, t.to_vec2::<f32>()?);
        let bytes = encode_report(&report)?;
        assert!(decode_report(&bytes[..bytes.len() - 1]).is_err());
        Ok(())
    }

    #[test]
    fn fingerprints_differ_with_one_byte() {
        let of = |bytes: &[u8]| {
            let mut f = Fingerprint::default();
            f.bytes(bytes);
            f.finish()
        };
        assert_eq!(of(b"cora"), of(b"cora"));
        assert_ne!(of(b"cora"), of(b"corb"));
    }
}
