//! Seeded synthetic graphs: a stochastic block model with homophily, and R-MAT power laws.
//!
//! Both generators are pure functions of their spec: the same spec gives the same graph, labels,
//! features and split on every platform, because every random choice comes from [`Rng`], whose
//! stream is pinned. Each part (labels, edges, feature topics, feature rows, split) draws from
//! its own stream derived from the seed, so changing, say, the feature density leaves the graph
//! and the split unchanged.

use super::csr::Csr;
use super::features::SparseFeatures;
use super::rng::Rng;

/// The probability that a feature id of a node is drawn from its class's topic set rather than
/// uniformly from all features: high enough that features predict the class, low enough that
/// classes overlap.
pub const TOPIC_PROBABILITY: f64 = 0.7;

/// The share of nodes in the training, validation and test sets of a synthetic split, in tenths.
const SPLIT_TENTHS: [u64; 3] = [1, 1, 2];

/// A generated graph with labels, features and a split.
///
/// Features are class-correlated and binary: the feature ids are shuffled and cut into
/// `num_classes` runs of about `features / num_classes` ids, each class's "topic". Each node
/// gets `clamp(round(feature_density * features), 1, features)` distinct ids, each drawn from
/// its class's topic with probability [`TOPIC_PROBABILITY`] (when the topic is not empty) and
/// uniformly from all ids otherwise, repeats redrawn; values are 1.0 and rows are sorted.
///
/// The split is a seeded random permutation of the nodes cut into 10 % train, 10 % validation
/// and 20 % test (sizes rounded down), each sorted ascending; the other 60 % are in no split.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticGraph {
    /// The undirected graph.
    pub graph: Csr,
    /// One label per node, in `0..num_classes`.
    pub labels: Vec<i32>,
    /// Binary, class-correlated sparse features.
    pub features: SparseFeatures,
    /// The number of classes.
    pub num_classes: u32,
    /// 10 % of the nodes, ascending.
    pub train: Vec<u32>,
    /// Another 10 %, ascending.
    pub val: Vec<u32>,
    /// Another 20 %, ascending.
    pub test: Vec<u32>,
}

/// Stochastic block model with class homophily.
#[derive(Debug, Clone, PartialEq)]
pub struct SbmSpec {
    /// The number of nodes.
    pub nodes: u32,
    /// The average degree asked for; `round(nodes * avg_degree / 2)` edges are drawn.
    pub avg_degree: f64,
    /// The number of classes (at least 1 is used).
    pub classes: u32,
    /// The feature width.
    pub features: u32,
    /// The probability that a drawn edge joins two nodes of the same class, in `[0, 1]`.
    pub homophily: f64,
    /// The fraction of feature ids each node holds (at least one).
    pub feature_density: f64,
    /// The seed of every random choice.
    pub seed: u64,
}

/// R-MAT power-law graph (Chakrabarti, Zhan, Faloutsos 2004).
#[derive(Debug, Clone, PartialEq)]
pub struct RmatSpec {
    /// The number of nodes.
    pub nodes: u32,
    /// The number of undirected edges drawn, before self loops and duplicates are dropped.
    pub edges: u64,
    /// The number of classes (at least 1 is used).
    pub classes: u32,
    /// The feature width.
    pub features: u32,
    /// The fraction of feature ids each node holds (at least one).
    pub feature_density: f64,
    /// The probability of the top-left quadrant (low id to low id).
    pub a: f64,
    /// The probability of the top-right quadrant.
    pub b: f64,
    /// The probability of the bottom-left quadrant; the bottom-right one gets `1 - a - b - c`.
    pub c: f64,
    /// The seed of every random choice.
    pub seed: u64,
}

/// Independent streams for the parts of a generated graph.
#[derive(Clone, Copy)]
enum Stream {
    Labels = 1,
    Edges = 2,
    Topics = 3,
    Features = 4,
    Split = 5,
}

/// The generator of one part of the graph for `seed`.
fn stream(seed: u64, part: Stream) -> Rng {
    // Multiplying by an odd constant spreads the small part numbers over the seed's bits;
    // SplitMix64 inside `Rng::new` then decorrelates neighbouring seeds.
    Rng::new(seed ^ (part as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// A nonnegative finite `x`, or 0.
fn sanitize(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// Generates a stochastic block model graph with class homophily.
///
/// # Arguments
/// * `spec`: sizes, homophily and seed. `classes` is raised to 1; `homophily` is clamped to
///   `[0, 1]`; a negative or non-finite `avg_degree` or `feature_density` counts as 0. The
///   caller keeps `nodes * avg_degree` to what memory allows.
///
/// # Returns
/// Each node gets a class uniformly at random. Then `round(nodes * avg_degree / 2)` undirected
/// edges are drawn: pick `u` uniformly; with probability `homophily` pick `v` uniformly among
/// the nodes of `u`'s class (`u` included), otherwise uniformly among the nodes of the other
/// classes. Self loops and repeated pairs are dropped, so the realised edge count is slightly
/// lower than drawn (by about `m / (nodes / classes)` self loops plus the birthday-paradox
/// repeats); an edge meant for another class is also dropped when there is no other class.
/// The expected fraction of same-class edges is therefore `homophily`. Features and split are
/// as described at [`SyntheticGraph`].
///
/// # Complexity
/// O(nodes + edges + nodes * features * feature_density) time and memory.
///
/// Holland, Laskey and Leinhardt, "Stochastic blockmodels: first steps", Social Networks 1983.
pub fn sbm(spec: &SbmSpec) -> SyntheticGraph {
    let n = spec.nodes;
    let classes = spec.classes.max(1);
    let homophily = sanitize(spec.homophily).min(1.0);

    let mut rng = stream(spec.seed, Stream::Labels);
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.below(u64::from(classes)) as u32)
        .collect();

    // Nodes grouped by class (a counting sort), so a class's members are one slice.
    let mut class_start = vec![0usize; classes as usize + 1];
    for &c in &labels {
        class_start[c as usize + 1] += 1;
    }
    for c in 0..classes as usize {
        class_start[c + 1] += class_start[c];
    }
    let mut cursor = class_start.clone();
    let mut by_class = vec![0u32; n as usize];
    for (v, &c) in labels.iter().enumerate() {
        by_class[cursor[c as usize]] = v as u32;
        cursor[c as usize] += 1;
    }

    let draws = (f64::from(n) * sanitize(spec.avg_degree) / 2.0).round() as u64;
    let mut rng = stream(spec.seed, Stream::Edges);
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(draws.min(1 << 28) as usize);
    if n > 0 {
        for _ in 0..draws {
            let u = rng.below(u64::from(n)) as u32;
            let c = labels[u as usize] as usize;
            let (start, end) = (class_start[c], class_start[c + 1]);
            let v = if rng.unit_f64() < homophily {
                by_class[start + rng.below((end - start) as u64) as usize]
            } else {
                let others = n as usize - (end - start);
                if others == 0 {
                    continue;
                }
                // Index the nodes of other classes as by_class without the slice start..end.
                let r = rng.below(others as u64) as usize;
                by_class[if r < start { r } else { r + end - start }]
            };
            edges.push((u, v));
        }
    }
    let graph = Csr::from_undirected_edges(n as usize, &edges);
    drop(edges);
    finish(
        graph,
        labels,
        classes,
        spec.features,
        spec.feature_density,
        spec.seed,
    )
}

/// Generates an R-MAT graph.
///
/// # Arguments
/// * `spec`: sizes, quadrant probabilities and seed. Negative or non-finite probabilities count
///   as 0, and `d = max(0, 1 - a - b - c)`; `classes` is raised to 1.
///
/// # Returns
/// Over a `2^s x 2^s` adjacency matrix with `s = ceil(log2 nodes)`, each of `spec.edges` edges
/// descends `s` levels, choosing at each the quadrant with probabilities `a, b, c, d`; the
/// row and column bits give the endpoints. A pair naming an id `>= nodes` is redrawn (and the
/// edge is dropped after 64 failed draws, which only a degenerate `d` close to 1 can cause).
/// Self loops and repeats are dropped, so the realised count is lower than `edges`, markedly so
/// for skewed probabilities. Ids are not permuted: with `a > d`, low ids are the hubs.
///
/// A node's class is `floor(id * classes / nodes)`, that is the leading bits of its id, its
/// top-level quadrant path; since R-MAT favours the diagonal quadrants when `a + d > b + c`,
/// classes are homophilous. Features and split are as described at [`SyntheticGraph`].
///
/// # Complexity
/// O(edges * log2(nodes) + nodes + nodes * features * feature_density).
///
/// Chakrabarti, Zhan and Faloutsos, "R-MAT: a recursive model for graph mining", SDM 2004.
pub fn rmat(spec: &RmatSpec) -> SyntheticGraph {
    let n = spec.nodes;
    let classes = spec.classes.max(1);
    let scale = if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    };
    // Each level compares 32 random bits with the cumulative probabilities scaled to 2^32, so
    // one 64-bit draw serves two levels.
    let threshold = |p: f64| (p.min(1.0) * 4_294_967_296.0) as u64;
    let a = sanitize(spec.a);
    let ab = a + sanitize(spec.b);
    let abc = ab + sanitize(spec.c);
    let (a, ab, abc) = (threshold(a), threshold(ab), threshold(abc));

    let mut rng = stream(spec.seed, Stream::Edges);
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(spec.edges.min(1 << 28) as usize);
    if n > 0 {
        for _ in 0..spec.edges {
            for _attempt in 0..64 {
                let (mut u, mut v) = (0u64, 0u64);
                let mut bits = 0u64;
                for level in 0..scale {
                    if level % 2 == 0 {
                        bits = rng.next_u64();
                    }
                    let r = bits & 0xFFFF_FFFF;
                    bits >>= 32;
                    // Quadrants a, b, c, d are (0, 0), (0, 1), (1, 0), (1, 1); computed without
                    // branches, which the processor could not predict.
                    let row = u64::from(r >= ab);
                    let col = (u64::from(r >= a) & u64::from(r < ab)) | u64::from(r >= abc);
                    u = u << 1 | row;
                    v = v << 1 | col;
                }
                if u < u64::from(n) && v < u64::from(n) {
                    edges.push((u as u32, v as u32));
                    break;
                }
            }
        }
    }
    let graph = Csr::from_undirected_edges(n as usize, &edges);
    drop(edges);
    let labels = (0..n)
        .map(|v| (u64::from(v) * u64::from(classes) / u64::from(n)) as u32)
        .collect();
    finish(
        graph,
        labels,
        classes,
        spec.features,
        spec.feature_density,
        spec.seed,
    )
}

/// Adds features and a split to a generated graph.
fn finish(
    graph: Csr,
    labels: Vec<u32>,
    classes: u32,
    features: u32,
    density: f64,
    seed: u64,
) -> SyntheticGraph {
    let features = class_features(&labels, classes, features, density, seed);
    let [train, val, test] = random_split(labels.len() as u32, seed);
    SyntheticGraph {
        graph,
        labels: labels.into_iter().map(|c| c as i32).collect(),
        features,
        num_classes: classes,
        train,
        val,
        test,
    }
}

/// Class-correlated sparse binary features, as described at [`SyntheticGraph`].
fn class_features(
    labels: &[u32],
    classes: u32,
    features: u32,
    density: f64,
    seed: u64,
) -> SparseFeatures {
    let n = labels.len();
    let mut topics: Vec<u32> = (0..features).collect();
    stream(seed, Stream::Topics).shuffle(&mut topics);
    let topic_bound = |c: u32| (u64::from(c) * u64::from(features) / u64::from(classes)) as usize;

    let per_node = if features == 0 {
        0
    } else {
        ((sanitize(density) * f64::from(features)).round() as u64).clamp(1, u64::from(features))
            as usize
    };
    let mut rng = stream(seed, Stream::Features);
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0u64);
    let mut columns: Vec<u32> = Vec::with_capacity(n.saturating_mul(per_node).min(1 << 28));
    // seen[f] == v + 1 when node v already holds feature f: no clearing between nodes.
    let mut seen = vec![0u32; features as usize];
    for (v, &c) in labels.iter().enumerate() {
        let topic = &topics[topic_bound(c)..topic_bound(c + 1)];
        let row_start = columns.len();
        let stamp = v as u32 + 1;
        while columns.len() - row_start < per_node {
            let f = if !topic.is_empty() && rng.unit_f64() < TOPIC_PROBABILITY {
                topic[rng.below(topic.len() as u64) as usize]
            } else {
                rng.below(u64::from(features)) as u32
            };
            if seen[f as usize] != stamp {
                seen[f as usize] = stamp;
                columns.push(f);
            }
        }
        columns[row_start..].sort_unstable();
        offsets.push(columns.len() as u64);
    }
    let values = vec![1.0f32; columns.len()];
    SparseFeatures {
        n_rows: n as u32,
        n_cols: features,
        offsets,
        columns,
        values,
    }
}

/// A seeded random split, as described at [`SyntheticGraph`].
fn random_split(n: u32, seed: u64) -> [Vec<u32>; 3] {
    let mut order: Vec<u32> = (0..n).collect();
    stream(seed, Stream::Split).shuffle(&mut order);
    let mut start = 0usize;
    SPLIT_TENTHS.map(|tenths| {
        let len = (u64::from(n) * tenths / 10) as usize;
        let mut part = order[start..start + len].to_vec();
        part.sort_unstable();
        start += len;
        part
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sbm_spec(seed: u64) -> SbmSpec {
        SbmSpec {
            nodes: 20_000,
            avg_degree: 10.0,
            classes: 5,
            features: 500,
            homophily: 0.8,
            feature_density: 0.02,
            seed,
        }
    }

    fn rmat_spec(seed: u64) -> RmatSpec {
        RmatSpec {
            nodes: 1 << 16,
            edges: 1 << 20,
            classes: 4,
            features: 200,
            feature_density: 0.05,
            a: 0.57,
            b: 0.19,
            c: 0.19,
            seed,
        }
    }

    fn edge_homophily(g: &SyntheticGraph) -> f64 {
        let mut same = 0u64;
        for v in 0..g.graph.n_nodes() as u32 {
            for &u in g.graph.neighbors(v) {
                if g.labels[u as usize] == g.labels[v as usize] {
                    same += 1;
                }
            }
        }
        same as f64 / g.graph.n_directed_edges() as f64
    }

    #[test]
    fn sbm_is_deterministic_and_seeded() {
        let small = |seed| SbmSpec {
            nodes: 2000,
            ..sbm_spec(seed)
        };
        let a = sbm(&small(3));
        assert_eq!(a, sbm(&small(3)));
        let b = sbm(&small(4));
        assert_ne!(a.graph, b.graph);
        assert_ne!(a.labels, b.labels);
        assert_ne!(a.train, b.train);
    }

    #[test]
    fn sbm_matches_its_spec() {
        let g = sbm(&sbm_spec(1));
        let avg_degree = g.graph.n_directed_edges() as f64 / 20_000.0;
        assert!(
            (avg_degree - 10.0).abs() < 0.2,
            "average degree {avg_degree}"
        );
        // Every kept edge is same-class exactly when the same-class branch drew it, so the
        // expected edge homophily is the spec's, less a negligible share of dropped self loops.
        let h = edge_homophily(&g);
        assert!((h - 0.8).abs() < 0.03, "edge homophily {h}");
        let g = sbm(&SbmSpec {
            homophily: 0.2,
            ..sbm_spec(1)
        });
        let h = edge_homophily(&g);
        assert!((h - 0.2).abs() < 0.03, "edge homophily {h}");
    }

    #[test]
    fn features_follow_the_class() {
        let g = sbm(&sbm_spec(1));
        let f = &g.features;
        assert_eq!((f.n_rows, f.n_cols), (20_000, 500));
        // 2 % of 500 ids per node, distinct, sorted, binary.
        assert_eq!(f.nnz(), 20_000 * 10);
        for r in 0..f.n_rows {
            let (cols, values) = f.row(r);
            assert!(cols.windows(2).all(|w| w[0] < w[1]));
            assert!(values.iter().all(|&x| x == 1.0));
        }
        // Nodes of one class share their topic: a feature id is mostly held by one class.
        let mut holders = vec![[0u32; 5]; 500];
        for r in 0..f.n_rows {
            for &col in f.row(r).0 {
                holders[col as usize][g.labels[r as usize] as usize] += 1;
            }
        }
        let dominant: u32 = holders.iter().map(|h| *h.iter().max().unwrap()).sum();
        let share = f64::from(dominant) / f.nnz() as f64;
        assert!(share > 0.7, "dominant-class share {share}");
    }

    #[test]
    fn split_sizes_and_disjointness() {
        let g = sbm(&sbm_spec(2));
        assert_eq!(
            (g.train.len(), g.val.len(), g.test.len()),
            (2000, 2000, 4000)
        );
        let mut all: Vec<u32> = [&g.train[..], &g.val[..], &g.test[..]].concat();
        assert!(g.train.windows(2).all(|w| w[0] < w[1]));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8000);
    }

    #[test]
    fn degenerate_specs_do_not_panic() {
        let g = sbm(&SbmSpec {
            nodes: 0,
            ..sbm_spec(1)
        });
        assert_eq!(g.graph.n_nodes(), 0);
        let g = sbm(&SbmSpec {
            nodes: 10,
            classes: 0,
            features: 0,
            avg_degree: f64::NAN,
            ..sbm_spec(1)
        });
        assert_eq!((g.graph.n_directed_edges(), g.features.nnz()), (0, 0));
        let g = sbm(&SbmSpec {
            nodes: 10,
            classes: 1,
            homophily: 0.0,
            ..sbm_spec(1)
        });
        assert_eq!(g.graph.n_directed_edges(), 0);
        let g = rmat(&RmatSpec {
            nodes: 5,
            edges: 100,
            a: 0.0,
            b: 0.0,
            c: 0.0,
            ..rmat_spec(1)
        });
        assert_eq!(g.graph.n_directed_edges(), 0);
        let g = rmat(&RmatSpec {
            nodes: 1,
            ..rmat_spec(1)
        });
        assert_eq!(g.graph.n_directed_edges(), 0);
    }

    #[test]
    fn rmat_is_deterministic_and_skewed() {
        let g = rmat(&rmat_spec(5));
        assert_eq!(g, rmat(&rmat_spec(5)));
        assert_ne!(g.graph, rmat(&rmat_spec(6)).graph);
        let n = g.graph.n_nodes() as u32;
        let mean = g.graph.n_directed_edges() as f64 / f64::from(n);
        let max = (0..n).map(|v| g.graph.degree(v)).max().unwrap();
        assert!(
            f64::from(max) > 20.0 * mean,
            "max degree {max}, mean {mean}"
        );
        // Some edges are repeats, but most survive.
        assert!(g.graph.n_undirected_edges() > (1 << 19));
        assert_eq!(g.labels[0], 0);
        assert_eq!(g.labels[(1 << 16) - 1], 3);
        // The diagonal quadrants are favoured at each level (a + d = 0.62 against 0.38), so
        // classes by the two leading id bits are homophilous: about 0.62^2 against 0.25.
        let h = edge_homophily(&g);
        assert!(h > 0.3, "edge homophily {h}");
    }
}
