//! Serde types mirroring the scenario YAML one to one, and the `--set` overrides.
//!
//! **Architecture Invariant:** with `schedule::file`, the only serde_yaml user. Every struct
//! denies unknown fields; quantities stay text here and are parsed with their units in
//! `validate`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
pub use serde_yaml::Value;

use crate::diag::{Diagnostic, Diagnostics, FieldPath, Locator, Origin, PathSeg};

/// A quantity as written: text such as `300GB/s`, or a bare number (rejected later for its
/// missing unit, with a message that says which unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity with its unit, such as 300GB/s or 1.5ms")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// The whole scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub devices: Vec<RawDevice>,
    #[serde(default)]
    pub links: Option<RawLinks>,
    #[serde(default)]
    pub workload: Option<RawWorkload>,
    #[serde(default)]
    pub graph: Option<RawGraph>,
    #[serde(default)]
    pub model: Option<RawModel>,
    #[serde(default)]
    pub training: Option<RawTraining>,
    pub schedule: RawSchedule,
    #[serde(default)]
    pub executor: Option<RawExecutor>,
}

/// `executor:`: how `pipegnn run` executes the schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecutor {
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub device_map: Option<String>,
    #[serde(default)]
    pub emulate_links: Option<bool>,
    #[serde(default)]
    pub threads_per_device: Option<i64>,
    #[serde(default)]
    pub cores: Option<i64>,
}

/// One entry of `devices:`, possibly expanded by `count`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub name: String,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub memory: Option<Quantity>,
    #[serde(default)]
    pub peak_flops: Option<Quantity>,
    #[serde(default)]
    pub memory_bandwidth: Option<Quantity>,
    #[serde(default)]
    pub op_overhead: Option<Quantity>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// `graph:`: exactly one source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraph {
    #[serde(default)]
    pub dataset: Option<RawDataset>,
    #[serde(default)]
    pub synthetic: Option<RawSynthetic>,
    #[serde(default)]
    pub stats: Option<RawStats>,
    #[serde(default)]
    pub ogb: Option<RawOgb>,
}

/// `graph.dataset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    pub path: String,
    #[serde(default)]
    pub feature_density: Option<f64>,
}

/// `graph.ogb`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOgb {
    pub path: String,
    #[serde(default)]
    pub undirected: Option<bool>,
    #[serde(default)]
    pub split: Option<String>,
}

/// `graph.synthetic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSynthetic {
    pub kind: String,
    pub nodes: i64,
    #[serde(default)]
    pub avg_degree: Option<f64>,
    #[serde(default)]
    pub edges: Option<i64>,
    pub classes: i64,
    pub features: i64,
    #[serde(default)]
    pub homophily: Option<f64>,
    #[serde(default)]
    pub feature_density: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub a: Option<f64>,
    #[serde(default)]
    pub b: Option<f64>,
    #[serde(default)]
    pub c: Option<f64>,
}

/// `graph.stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStats {
    pub nodes: i64,
    pub edges: i64,
    pub features: i64,
    pub classes: i64,
    #[serde(default)]
    pub feature_density: Option<f64>,
    #[serde(default)]
    pub cut_fraction: Option<f64>,
}

/// `model:`: a layer list or a shorthand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    #[serde(default)]
    pub layers: Option<Vec<RawLayer>>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub depth: Option<i64>,
    #[serde(default)]
    pub hidden: Option<i64>,
    #[serde(default)]
    pub heads: Option<i64>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub activation: Option<String>,
}

/// One entry of `model.layers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLayer {
    pub kind: String,
    pub out: i64,
    #[serde(default)]
    pub heads: Option<i64>,
    #[serde(default)]
    pub concat: Option<bool>,
}

/// `links:`: a topology preset, explicit pairs, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinks {
    #[serde(default)]
    pub topology: Option<RawTopology>,
    #[serde(default)]
    pub pairs: Vec<RawPair>,
}

/// `links.topology`: `full`, `ring` and `switch` take a link (`preset`, `bandwidth`,
/// `latency`); `cluster` takes its node and network fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopology {
    pub kind: String,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub bandwidth: Option<Quantity>,
    #[serde(default)]
    pub latency: Option<Quantity>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub gpus_per_node: Option<i64>,
    #[serde(default)]
    pub nics_per_node: Option<i64>,
    #[serde(default)]
    pub intra: Option<RawLinkChoice>,
    #[serde(default)]
    pub inter: Option<RawLinkChoice>,
    #[serde(default)]
    pub nodes_per_leaf: Option<i64>,
    #[serde(default)]
    pub oversubscription: Option<f64>,
}

/// A cluster's `intra` or `inter` link: a link preset's name, or `{preset, bandwidth, latency}`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLinkChoice {
    /// `intra: nvlink4`.
    Preset(String),
    /// `intra: {bandwidth: 450GB/s, latency: 1us}`, optionally over a `preset`.
    Spec(RawLinkSpec),
}

/// The written-out form of [`RawLinkChoice`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinkSpec {
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub bandwidth: Option<Quantity>,
    #[serde(default)]
    pub latency: Option<Quantity>,
}

impl<'de> Deserialize<'de> for RawLinkChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;
        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = RawLinkChoice;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a link preset name or {bandwidth, latency}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawLinkChoice, E> {
                Ok(RawLinkChoice::Preset(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawLinkChoice, A::Error> {
                RawLinkSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawLinkChoice::Spec)
            }
        }
        deserializer.deserialize_any(ChoiceVisitor)
    }
}

/// One entry of `links.pairs`: a full-duplex link between two devices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPair {
    pub between: Vec<String>,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub bandwidth: Option<Quantity>,
    #[serde(default)]
    pub latency: Option<Quantity>,
}

/// `workload:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    pub kind: String,
    #[serde(default)]
    pub per: Option<String>,
    #[serde(default)]
    pub stages: Vec<RawStageWork>,
}

/// One entry of `workload.stages` (explicit workload).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStageWork {
    pub forward: Quantity,
    pub backward: Quantity,
    #[serde(default)]
    pub optimizer: Option<Quantity>,
    #[serde(default)]
    pub activation: Option<Quantity>,
    #[serde(default)]
    pub stash: Option<Quantity>,
    #[serde(default)]
    pub parameters: Option<Quantity>,
}

/// `training:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraining {
    #[serde(default)]
    pub optimizer: Option<String>,
    #[serde(default)]
    pub epochs: Option<i64>,
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub weight_decay: Option<f64>,
    #[serde(default)]
    pub dropout: Option<f64>,
    #[serde(default)]
    pub attention_dropout: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
}

/// `schedule:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub chunks: Option<i64>,
    #[serde(default)]
    pub backward_order: Option<String>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub placement: Option<Vec<String>>,
    #[serde(default)]
    pub chunking: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// `auto` or a list of layer counts: kept as a YAML value and checked in `validate`.
    #[serde(default)]
    pub stages: Option<Value>,
    #[serde(default)]
    pub halo: Option<String>,
    #[serde(default)]
    pub backward: Option<String>,
    #[serde(default)]
    pub update: Option<String>,
    #[serde(default)]
    pub exchange: Option<String>,
    #[serde(default)]
    pub stages_per_device: Option<i64>,
    /// Graph parallelism's algorithm: `1d`, `1.5d`, `2d` or `3d`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// 1.5D's replication factor c.
    #[serde(default)]
    pub replication: Option<i64>,
    /// GNNPipe's graph partitions per stage (its hybrid with graph parallelism).
    #[serde(default)]
    pub partitions: Option<i64>,
}

/// Reads `schedule.stages`: `auto` (None) or a list of positive layer counts.
pub fn stages_value(value: &Value) -> Result<Option<Vec<usize>>, String> {
    let expected = "expected `auto` or a list of layer counts per stage, e.g. [2, 2]";
    match value {
        Value::String(text) if text == "auto" => Ok(None),
        Value::Sequence(items) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| expected.to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(expected.to_string()),
    }
}

/// Device and link presets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPresets {
    pub devices: BTreeMap<String, RawDevicePreset>,
    pub links: BTreeMap<String, RawLinkPreset>,
    pub nodes: BTreeMap<String, RawNodePreset>,
}

/// One node preset: a cluster node's GPUs, its fabric and its NICs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodePreset {
    pub gpus_per_node: i64,
    pub nics_per_node: i64,
    pub intra: String,
    pub inter: String,
}

/// One device preset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevicePreset {
    pub memory: Quantity,
    pub peak_flops: Quantity,
    pub memory_bandwidth: Quantity,
    pub op_overhead: Quantity,
}

/// One link preset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinkPreset {
    pub bandwidth: Quantity,
    pub latency: Quantity,
}

/// The built-in presets (`presets.yaml`, compiled in).
pub fn presets() -> RawPresets {
    serde_yaml::from_str(include_str!("presets.yaml"))
        .expect("presets.yaml is part of the crate and a unit test parses it")
}

/// Parses scenario text, applies `--set key=value` overrides, and deserializes the result.
///
/// # Returns
/// The raw scenario and a locator that maps field paths to lines (or to the override that set
/// them), or the first syntax, override or shape problem.
pub fn parse(
    file: &str,
    text: &str,
    overrides: &[String],
) -> Result<(RawScenario, Locator), Diagnostics> {
    let mut locator = Locator::new(file, text).map_err(|diag| Diagnostics(vec![diag]))?;
    let mut value: Value = serde_yaml::from_str(text).map_err(|err| {
        let origin = err.location().map_or_else(
            || locator.unplaced_origin(),
            |at| Origin::Line {
                line: at.line(),
                column: at.column(),
            },
        );
        one(
            file,
            origin,
            FieldPath::root(),
            strip_location(&err.to_string()),
        )
    })?;
    if let Some(diag) = locator.unreadable(file) {
        return Err(Diagnostics(vec![diag]));
    }
    if value.is_null() {
        return Err(one(
            file,
            locator.unplaced_origin(),
            FieldPath::root(),
            "no scenario: the file is empty (or holds only comments or `null`)".into(),
        ));
    }
    // Found before merging, which drops the entry it fails on.
    let unmergeable = bad_merge(&value, FieldPath::root());
    value.apply_merge().map_err(|err| {
        let (path, origin) = match unmergeable {
            Some(path) => {
                let origin = locator.key_origin(&path);
                (path, origin)
            }
            None => (FieldPath::root(), Origin::Unknown),
        };
        one(file, origin, path, strip_location(&err.to_string()))
    })?;
    for text in overrides {
        let (path, new_value) = parse_override(text).map_err(|message| {
            one(
                file,
                Origin::Override(text.clone()),
                FieldPath::root(),
                message,
            )
        })?;
        set_path(&mut value, &path, new_value)
            .map_err(|message| one(file, Origin::Override(text.clone()), path.clone(), message))?;
        locator.record_override(path, text.clone());
    }
    let raw = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = convert_path(err.path());
        let message = strip_location(&err.inner().to_string());
        // serde reports an unknown field at its parent; point at the field's own key.
        let (path, origin) = match unknown_field_name(&message) {
            Some(name) => {
                // serde_path_to_error already ends the path with the unknown key.
                let field = match path.0.last() {
                    Some(PathSeg::Key(last)) if last == name => path.clone(),
                    _ => path.key(name),
                };
                let origin = locator.key_origin(&field);
                (field, origin)
            }
            None => {
                let origin = locator.origin(&path);
                (path, origin)
            }
        };
        one(file, origin, path, message)
    })?;
    Ok((raw, locator))
}

/// The first `<<` merge key, in document order, whose value serde_yaml cannot merge (anything
/// but a mapping or a list of mappings): its error names no place.
fn bad_merge(value: &Value, path: FieldPath) -> Option<FieldPath> {
    match value {
        Value::Mapping(map) => map.iter().find_map(|(key, child)| {
            let key = match key {
                Value::String(text) => text.clone(),
                // As the key is written (`1`, `true`), which is how the locator knows it.
                other => serde_yaml::to_string(other)
                    .map(|text| text.trim_end().to_owned())
                    .unwrap_or_default(),
            };
            let child_path = path.key(&key);
            let mergeable = match child {
                Value::Mapping(_) => true,
                Value::Sequence(items) => items.iter().all(Value::is_mapping),
                _ => false,
            };
            if key == "<<" && !mergeable {
                return Some(child_path);
            }
            bad_merge(child, child_path)
        }),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| bad_merge(item, path.index(index))),
        Value::Tagged(tagged) => bad_merge(&tagged.value, path),
        _ => None,
    }
}

fn one(file: &str, origin: Origin, path: FieldPath, message: String) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        file: file.to_string(),
        origin,
        path,
        message,
    }])
}

fn strip_location(message: &str) -> String {
    crate::schedule::file::strip_location(message)
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

fn convert_path(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment;
    FieldPath(
        path.iter()
            .filter_map(|seg| match seg {
                Segment::Seq { index } => Some(PathSeg::Index(*index)),
                Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                Segment::Enum { variant } => Some(PathSeg::Key(variant.clone())),
                Segment::Unknown => None,
            })
            .collect(),
    )
}

/// Splits `key.path=value` and parses the value as YAML (so `8` is a number, `1ms` text).
fn parse_override(text: &str) -> Result<(FieldPath, Value), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| "expected key=value, e.g. schedule.chunks=8".to_string())?;
    let path = FieldPath::parse(key.trim())
        .filter(|p| !p.0.is_empty())
        .ok_or_else(|| format!("`{key}` is not a field path (write e.g. devices.0.count)"))?;
    let value = serde_yaml::from_str(value)
        .map_err(|err| format!("value: {}", strip_location(&err.to_string())))?;
    Ok((path, value))
}

/// Writes `new_value` at `path`, creating mapping keys that are missing (so optional fields can
/// be set); sequence indices must exist.
fn set_path(root: &mut Value, path: &FieldPath, new_value: Value) -> Result<(), String> {
    let mut node = root;
    for (depth, seg) in path.0.iter().enumerate() {
        let here = FieldPath(path.0[..depth].to_vec());
        node = match (seg, node) {
            (PathSeg::Key(key), Value::Mapping(map)) => {
                map.entry(Value::String(key.clone())).or_insert(Value::Null)
            }
            (PathSeg::Index(index), Value::Sequence(items)) => {
                let len = items.len();
                items.get_mut(*index).ok_or_else(|| {
                    format!("index {index} is out of range ({here} has {len} entries)")
                })?
            }
            (PathSeg::Key(key), node @ Value::Null) => {
                *node = Value::Mapping(Default::default());
                let Value::Mapping(map) = node else {
                    unreachable!("just made a mapping")
                };
                map.entry(Value::String(key.clone())).or_insert(Value::Null)
            }
            (PathSeg::Index(_), _) => return Err(format!("{here} is not a list")),
            (PathSeg::Key(_), _) => return Err(format!("{here} is not a mapping")),
        };
    }
    *node = new_value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        let presets = presets();
        assert!(presets.devices.contains_key("h100"));
        assert!(presets.links.contains_key("nvlink4"));
    }

    #[test]
    fn overrides_create_and_replace() {
        let mut value: Value = serde_yaml::from_str("a: {b: 1}\nlist: [x, y]").unwrap();
        let (path, v) = parse_override("a.c=2ms").unwrap();
        set_path(&mut value, &path, v).unwrap();
        let (path, v) = parse_override("list.1=z").unwrap();
        set_path(&mut value, &path, v).unwrap();
        assert_eq!(value["a"]["c"], Value::String("2ms".into()));
        assert_eq!(value["list"][1], Value::String("z".into()));
        let (path, v) = parse_override("list.5=z").unwrap();
        assert!(set_path(&mut value, &path, v)
            .unwrap_err()
            .contains("out of range"));
    }
}
