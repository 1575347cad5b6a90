"""Reference epoch time of PyTorch Geometric (PyG) on a graph-csv v1 dataset.

What it measures
----------------
Full-batch node-classification training of a 2-layer GCN, GraphSAGE or GAT with PyG on
CPU, on one graph-csv v1 folder (see shared/data/README.md). Each training
epoch (optimizer.zero_grad + forward + cross-entropy on the train split +
backward + optimizer.step) is timed with time.perf_counter. Evaluation
(val/test accuracy, computed every epoch in eval mode under no_grad) happens
outside the timed region. The first --warmup epochs are trained but left out
of the timing statistics. One JSON line is printed on stdout:

  {"dataset", "model", "threads", "epochs", "median_epoch_ms", "p10_epoch_ms",
   "p90_epoch_ms", "test_accuracy_at_best_val", "final_test_accuracy",
   "torch", "torch_geometric", ...extra keys (timed_epochs, warmup,
   sparse_input, cached, seed, load_avg_before, load_avg_after, ...)}

"epochs" is the total number of training epochs (warm-up included);
"timed_epochs" = epochs - warmup is the number of epochs the statistics cover.

Models (PyG's standard Planetoid examples):
  gcn: dropout(0.5) -> GCNConv(F,16) -> ReLU -> dropout(0.5) -> GCNConv(16,C)
       Adam(lr=0.01, weight_decay=5e-4 on all parameters)
  sage: dropout(0.5) -> SAGEConv(F,16) (mean) -> ReLU -> dropout(0.5) -> SAGEConv(16,C)
       Adam(lr=0.01, weight_decay=5e-4 on all parameters); with --sparse-input the first
       layer projects before taking neighbour means (the same function: the mean is linear;
       the bias then averages in with the rows, equal for every vertex with a neighbour)
  gat: dropout(0.6) -> GATConv(F,8,heads=8,dropout=0.6) -> ELU -> dropout(0.6)
       -> GATConv(64,C,heads=1,concat=False,dropout=0.6)
       Adam(lr=0.01, weight_decay=5e-4 on all parameters)
Features are row-normalised (each row divided by its sum; all-zero rows stay
zero). edge_index holds both directions of every undirected edge; GCNConv and
GATConv add self loops themselves (PyG defaults). Labels of -1 (CiteSeer's
phantom nodes) are never in a split, so they never reach the loss.

--sparse-input keeps the features as a torch sparse CSR tensor; PyG's Linear
(used by GCNConv and GATConv for the first layer's X @ W) accepts it (checked
with torch 2.15 / PyG 2.8.1). Input dropout is then applied to the stored
values only (as in Kipf's sparse_dropout).

--cached passes cached=True to GCNConv (the normalised adjacency is computed
once instead of every forward pass). Off by default (PyG's default).

Dependencies (throwaway virtualenv; the Rust project itself never needs torch)
-----------------------------------------------------------------------------
  python3 -m venv /tmp/pyg-venv
  /tmp/pyg-venv/bin/pip install torch torch_geometric
Only the standard library, torch and torch_geometric are imported. Plain PyPI
serves a CUDA build of torch for Linux (~5 GB with its nvidia-* wheels); it
runs fine on CPU. torch-scatter / torch-sparse / pyg-lib are not needed.

How to run
----------
  /tmp/pyg-venv/bin/python tests/reference/pyg_epoch.py \
      --data /work/shared/data/cora --model gcn --threads 2 --epochs 200
Options: --data DIR, --model gcn|sage|gat, --threads N (torch.set_num_threads and
torch.set_num_interop_threads), --epochs N (default 200), --warmup N
(default 5), --sparse-input, --cached, --seed N (default 0), --device cpu|cuda
(cuda: everything on GPU 0, torch.cuda.synchronize() before each clock read).
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def read_csv_rows(path, header):
    with open(path, "r", encoding="ascii") as f:
        first = f.readline().rstrip("\n")
        if first != header:
            raise ValueError(f"{path}: header {first!r}, expected {header!r}")
        return [line.rstrip("\n").split(",") for line in f if line.strip()]


def load_graph_csv(folder):
    with open(os.path.join(folder, "meta.json"), "r") as f:
        meta = json.load(f)
    n = meta["num_nodes"]
    nf = meta["num_features"]
    nc = meta["num_classes"]
    if not meta.get("features_available", True):
        raise SystemExit(f"{folder}: features not available (PubMed); nothing to train on")

    edges = read_csv_rows(os.path.join(folder, "edges.csv"), "src,dst")
    src = torch.tensor([int(r[0]) for r in edges], dtype=torch.long)
    dst = torch.tensor([int(r[1]) for r in edges], dtype=torch.long)
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])

    feats = read_csv_rows(os.path.join(folder, "features.csv"), "node,feature,value")
    rows = torch.tensor([int(r[0]) for r in feats], dtype=torch.long)
    cols = torch.tensor([int(r[1]) for r in feats], dtype=torch.long)
    vals = torch.tensor([float(r[2]) for r in feats], dtype=torch.float32)
    rowsum = torch.zeros(n, dtype=torch.float32).index_add_(0, rows, vals)
    inv = torch.where(rowsum > 0, 1.0 / rowsum, torch.zeros_like(rowsum))
    vals = vals * inv[rows]
    # COO triples are sorted by (node, feature) with no repeats -> valid CSR order.
    x_coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, nf)).coalesce()

    labels = read_csv_rows(os.path.join(folder, "labels.csv"), "node,label")
    y = torch.tensor([int(r[1]) for r in labels], dtype=torch.long)
    assert y.numel() == n

    def idx(name):
        r = read_csv_rows(os.path.join(folder, name), "node")
        return torch.tensor([int(v[0]) for v in r], dtype=torch.long)

    return {
        "name": meta.get("name", os.path.basename(os.path.normpath(folder))),
        "n": n, "f": nf, "c": nc,
        "edge_index": edge_index,
        "x_coo": x_coo,
        "y": y,
        "train": idx("train_idx.csv"),
        "val": idx("val_idx.csv"),
        "test": idx("test_idx.csv"),
    }


def input_dropout(x, p, training):
    if not training or p == 0.0:
        return x
    if x.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(),
                                       F.dropout(x.values(), p, True), x.shape)
    if x.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(x.indices(), F.dropout(x.values(), p, True),
                                       x.shape, is_coalesced=True)
    return F.dropout(x, p, True)


def build_model(kind, nf, nc, cached):
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv

    class GCN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GCNConv(nf, 16, cached=cached)
            self.conv2 = GCNConv(16, nc, cached=cached)

        def forward(self, x, edge_index):
            x = input_dropout(x, 0.5, self.training)
            x = F.relu(self.conv1(x, edge_index))
            x = F.dropout(x, 0.5, self.training)
            return self.conv2(x, edge_index)

    class GAT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GATConv(nf, 8, heads=8, dropout=0.6)
            self.conv2 = GATConv(8 * 8, nc, heads=1, concat=False, dropout=0.6)

        def forward(self, x, edge_index):
            x = input_dropout(x, 0.6, self.training)
            x = F.elu(self.conv1(x, edge_index))
            x = F.dropout(x, 0.6, self.training)
            return self.conv2(x, edge_index)

    class SAGE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = SAGEConv(nf, 16)
            self.conv2 = SAGEConv(16, nc)

        def first(self, x, edge_index):
            if x.layout == torch.strided:
                return self.conv1(x, edge_index)
            # SAGEConv gathers x's rows before its linear map, which a sparse x cannot do;
            # the mean commutes with the map, so project first, then take neighbour means.
            conv = self.conv1
            projected = conv.lin_l(x)
            return conv.propagate(edge_index, x=(projected, projected), size=None) + conv.lin_r(x)

        def forward(self, x, edge_index):
            x = input_dropout(x, 0.5, self.training)
            x = F.relu(self.first(x, edge_index))
            x = F.dropout(x, 0.5, self.training)
            return self.conv2(x, edge_index)

    if kind == "gcn":
        return GCN(), 5e-4
    if kind == "sage":
        return SAGE(), 5e-4
    return GAT(), 5e-4


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="graph-csv v1 folder")
    ap.add_argument("--model", choices=["gcn", "sage", "gat"], default="gcn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sparse-input", action="store_true")
    ap.add_argument("--cached", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: data and model on GPU 0, synchronized around each timed epoch")
    args = ap.parse_args()
    if args.warmup >= args.epochs:
        raise SystemExit("--warmup must be smaller than --epochs")

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(args.seed)

    import torch_geometric

    g = load_graph_csv(args.data)
    x = g["x_coo"].to_sparse_csr() if args.sparse_input else g["x_coo"].to_dense()
    edge_index, y = g["edge_index"], g["y"]
    train, val, test = g["train"], g["val"], g["test"]

    device = torch.device(args.device)
    x, edge_index, y = x.to(device), edge_index.to(device), y.to(device)
    train, val, test = train.to(device), val.to(device), test.to(device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    model, wd = build_model(args.model, g["f"], g["c"], args.cached)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=wd)

    la_before = loadavg()
    times = []
    best_val, test_at_best, final_test = -1.0, 0.0, 0.0
    for epoch in range(args.epochs):
        model.train()
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model(x, edge_index)
        loss = F.cross_entropy(out[train], y[train])
        loss.backward()
        opt.step()
        sync()
        t1 = time.perf_counter()
        if epoch >= args.warmup:
            times.append((t1 - t0) * 1000.0)

        model.eval()
        with torch.no_grad():
            pred = model(x, edge_index).argmax(dim=-1)
            val_acc = (pred[val] == y[val]).float().mean().item()
            test_acc = (pred[test] == y[test]).float().mean().item()
        if val_acc > best_val:
            best_val, test_at_best = val_acc, test_acc
        final_test = test_acc

    q = statistics.quantiles(times, n=10, method="inclusive")
    result = {
        "dataset": g["name"],
        "model": args.model,
        "threads": args.threads,
        "epochs": args.epochs,
        "median_epoch_ms": round(statistics.median(times), 3),
        "p10_epoch_ms": round(q[0], 3),
        "p90_epoch_ms": round(q[8], 3),
        "test_accuracy_at_best_val": round(test_at_best, 4),
        "final_test_accuracy": round(final_test, 4),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "timed_epochs": len(times),
        "warmup": args.warmup,
        "best_val_accuracy": round(best_val, 4),
        "final_train_loss": round(loss.item(), 4),
        "sparse_input": args.sparse_input,
        "cached": args.cached,
        "seed": args.seed,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "load_avg_before": la_before,
        "load_avg_after": loadavg(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
