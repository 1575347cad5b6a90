//! Plots: every SVG is well-formed XML, every PNG decodes, and the data behind each figure is
//! the trace, metrics or compare rows it was drawn from; `pipegnn plot` fails cleanly on bad files.

use pipegnn::report::plot::{BarKind, Figure, Format};
use pipegnn::report::{self, chrome_trace, plot};
use pipegnn::schedule::OpKind;
use pipegnn::trace::{SpanKind, Trace};

use crate::scenarios::{load, own, predict};
use crate::support::{pipegnn, root, scratch, stderr, write};

fn explicit_trace() -> Trace {
    let loaded = load(&root().join("scenarios/explicit-pipeline.yaml"), &[]);
    predict(&loaded, &own(&loaded.scenario)).trace
}

fn assert_svg(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("SVG is UTF-8");
    let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("SVG parses: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
}

fn assert_png(bytes: &[u8], size: (u32, u32)) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header decodes");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG data decodes");
    assert_eq!((info.width, info.height), size);
    // Not blank: text and bars put more than the background colour on it.
    assert!(pixels.iter().any(|&b| b != 255));
}

fn assert_renders(figure: &Figure) {
    assert_svg(&figure.render(Format::Svg).unwrap());
    assert_png(&figure.render(Format::Png).unwrap(), figure.size());
}

#[test]
fn timeline_bars_are_the_trace_spans() {
    let trace = explicit_trace();
    let data = plot::timeline_data("explicit", &trace);
    assert_eq!(data.bars.len(), trace.spans.len());
    assert!(trace
        .spans
        .iter()
        .any(|s| matches!(s.kind, SpanKind::Transfer(_))));
    for (bar, span) in data.bars.iter().zip(&trace.spans) {
        assert_eq!(
            (bar.start_ns, bar.end_ns, bar.chunk),
            (span.start_ns, span.end_ns, span.chunk)
        );
        let (kind, lane) = match span.kind {
            SpanKind::Compute(OpKind::Forward) => (
                BarKind::Forward,
                trace.devices[span.lane_index as usize].name.clone(),
            ),
            SpanKind::Compute(OpKind::Backward) => (
                BarKind::Backward,
                trace.devices[span.lane_index as usize].name.clone(),
            ),
            SpanKind::Compute(OpKind::InputGrad) => (
                BarKind::InputGrad,
                trace.devices[span.lane_index as usize].name.clone(),
            ),
            SpanKind::Compute(OpKind::WeightGrad) => (
                BarKind::WeightGrad,
                trace.devices[span.lane_index as usize].name.clone(),
            ),
            SpanKind::Compute(OpKind::Optimizer) => (
                BarKind::Optimizer,
                trace.devices[span.lane_index as usize].name.clone(),
            ),
            SpanKind::Transfer(_) => {
                let link = &trace.links[span.lane_index as usize];
                (BarKind::Transfer, format!("{} -> {}", link.from, link.to))
            }
        };
        assert_eq!(bar.kind, kind);
        assert_eq!(data.lanes[bar.lane], lane);
    }
    assert_eq!(data.epoch_ns, report::compute(&trace).epoch_time_ns);
    let figure = Figure::Timeline(vec![data.clone(), data]);
    assert_renders(&figure);
}

#[test]
fn chrome_trace_reads_back_into_the_same_timeline() {
    let trace = explicit_trace();
    let direct = plot::timeline_data("t", &trace);
    let doc: serde_json::Value = serde_json::from_str(&chrome_trace::render(&trace)).unwrap();
    let back = plot::timeline_from_chrome("t", &doc["traceEvents"]).unwrap();
    assert_eq!(back.lanes, direct.lanes);
    assert_eq!(back.bars.len(), direct.bars.len());
    for (a, b) in back.bars.iter().zip(&direct.bars) {
        assert_eq!((a.lane, a.kind, a.chunk), (b.lane, b.kind, b.chunk));
        // Chrome traces hold microseconds as floats.
        assert!(a.start_ns.abs_diff(b.start_ns) <= 1 && a.end_ns.abs_diff(b.end_ns) <= 2);
    }
}

#[test]
fn memory_bars_are_memory_at_peak() {
    let trace = explicit_trace();
    let metrics = report::compute(&trace);
    let data = plot::memory_data("explicit", &metrics);
    assert_eq!(data.devices.len(), metrics.devices.len());
    for (bar, device) in data.devices.iter().zip(&metrics.devices) {
        assert_eq!(bar.device, device.name);
        assert_eq!(bar.bytes, device.memory_at_peak);
        assert_eq!(bar.bytes.iter().sum::<u64>(), device.peak_memory_bytes);
        assert_eq!(bar.capacity_bytes, device.capacity_bytes);
    }
    assert_renders(&Figure::Memory(data));
}

const COMPARE: &str = r#"{"scenario": "s", "schedule": "gpipe-drop", "metrics": [
  {"name": "epoch_time_s", "device": null, "predicted": 0.012, "measured": 0.011, "relative_error": 0.09},
  {"name": "busy_s", "device": "cpu0", "predicted": 0.008, "measured": 0.009, "relative_error": -0.11},
  {"name": "bubble_fraction", "device": "cpu0", "predicted": 0.3, "measured": 0.25, "relative_error": 0.2},
  {"name": "peak_memory_bytes", "device": "cpu0", "predicted": 1.0e8, "measured": null, "relative_error": null},
  {"name": "link_bytes", "device": "cpu0 -> cpu1", "predicted": 4.0e6, "measured": 4.0e6, "relative_error": 0.0},
  {"name": "link_bytes", "device": "cpu1 -> cpu0", "predicted": 0.0, "measured": 0.0, "relative_error": null}
]}"#;

#[test]
fn compare_points_are_the_measured_rows() {
    let figures = plot::figures_from_documents(&[("c.json", COMPARE)]).unwrap();
    assert_eq!(figures.len(), 1);
    let Figure::Compare(data) = &figures[0].1 else {
        panic!("a compare document gives a compare figure")
    };
    let doc: serde_json::Value = serde_json::from_str(COMPARE).unwrap();
    let expected: Vec<(String, Option<String>, f64, f64)> = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["measured"].as_f64().is_some_and(|m| m > 0.0))
        .filter(|r| r["predicted"].as_f64().unwrap() > 0.0)
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["device"].as_str().map(String::from),
                r["predicted"].as_f64().unwrap(),
                r["measured"].as_f64().unwrap(),
            )
        })
        .collect();
    let got: Vec<(String, Option<String>, f64, f64)> = data
        .points
        .iter()
        .map(|p| (p.name.clone(), p.device.clone(), p.predicted, p.measured))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 4);
    assert_renders(&figures[0].1);
}

#[test]
fn sweep_and_line_charts_render_their_points() {
    let sweep = r#"{"scenario": "q", "axes": [{"key": "schedule.chunks", "values": ["2", "4"]}],
      "points": [
        {"set": {"schedule.chunks": "2"}, "schedule": "gpipe", "stages": 4, "chunks": 2, "devices": 4,
         "epoch_time_s": 0.004, "bubble_fraction": 0.6, "communication_bytes": 10, "peak_memory_bytes": 5, "fits": true, "error": null},
        {"set": {"schedule.chunks": "4"}, "schedule": "gpipe", "stages": 4, "chunks": 4, "devices": 4,
         "epoch_time_s": 0.003, "bubble_fraction": 0.43, "communication_bytes": 10, "peak_memory_bytes": 5, "fits": true, "error": null},
        {"set": {"schedule.chunks": "8"}, "schedule": "gpipe", "stages": 4, "chunks": 8, "devices": 4,
         "epoch_time_s": null, "bubble_fraction": null, "communication_bytes": null, "peak_memory_bytes": null, "fits": null, "error": "boom"}
      ]}"#;
    let figures = plot::figures_from_documents(&[("sweep.json", sweep)]).unwrap();
    assert_eq!(figures.len(), 1);
    assert_eq!(figures[0].0, "sweep-bubble-vs-chunks");
    let Figure::Lines(chart) = &figures[0].1 else {
        panic!("a line chart")
    };
    assert_eq!(chart.series.len(), 1);
    assert_eq!(chart.series[0].points, vec![(2.0, 60.0), (4.0, 43.0)]);
    assert_renders(&figures[0].1);
}

#[test]
fn plot_command_writes_svg_and_png_from_saved_json() {
    let dir = scratch("plot-command");
    let trace = dir.join("q.trace.json");
    let result = dir.join("q.json");
    let out = pipegnn(&[
        "simulate",
        "scenarios/explicit-pipeline.yaml",
        "--trace",
        trace.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&result, &out.stdout).unwrap();
    let compare = write(&dir, "c.json", COMPARE);
    let plots = dir.join("plots");
    let out = pipegnn(&[
        "plot",
        trace.to_str().unwrap(),
        result.to_str().unwrap(),
        compare.to_str().unwrap(),
        "--out",
        plots.to_str().unwrap(),
        "--png",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["q-timeline", "q-1f1b-memory", "c-compare"] {
        let svg = std::fs::read(plots.join(format!("{name}.svg"))).unwrap();
        assert_svg(&svg);
        let png = std::fs::read(plots.join(format!("{name}.png"))).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        decoder.read_info().expect("PNG decodes");
    }
}

#[test]
fn plot_rejects_bad_files_with_one_line() {
    let dir = scratch("plot-bad");
    let cases = [
        ("garbage.json", "not json at all"),
        ("unknown.json", r#"{"hello": 1}"#),
        (
            "bad-results.json",
            r#"{"scenario": "s", "results": [{"schedule": 3}]}"#,
        ),
        (
            "bad-trace.json",
            r#"{"traceEvents": [{"ph": "X", "pid": 1, "tid": 0}]}"#,
        ),
    ];
    for (name, text) in cases {
        let path = write(&dir, name, text);
        let out = pipegnn(&[
            "plot",
            path.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(4), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
    }
    let out = pipegnn(&["plot", dir.join("missing.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn gallery_files_in_the_repository_are_well_formed_and_small() {
    let dir = root().join("plots");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("plots/ is committed") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "svg") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                bytes.len() < 300_000,
                "{} is {} bytes",
                path.display(),
                bytes.len()
            );
            assert_svg(&bytes);
            seen += 1;
        }
    }
    assert!(seen >= 4, "plots/ holds the gallery's four figures");
}

#[test]
fn accuracy_curves_of_several_runs_overlay_in_one_figure() {
    let run = |schedule: &str, acc: [f64; 2]| {
        format!(
            r#"{{"scenario": "cora", "results": [{{"schedule": "{schedule}", "devices": [],
              "epochs": [{{"epoch": 1, "loss": 1.9, "train_accuracy": 0.2, "val_accuracy": {}, "test_accuracy": 0.2}},
                         {{"epoch": 2, "loss": 1.7, "train_accuracy": 0.4, "val_accuracy": {}, "test_accuracy": 0.3}}]}}]}}"#,
            acc[0], acc[1]
        )
    };
    let (a, b) = (run("gpipe-drop", [0.25, 0.5]), run("gnnpipe", [0.3, 0.75]));
    let figures = plot::figures_from_documents(&[("a.json", &a), ("b.json", &b)]).unwrap();
    let (name, Figure::Lines(chart)) = figures.last().unwrap() else {
        panic!("the accuracy figure comes last")
    };
    assert_eq!(name, "accuracy");
    let series: Vec<(&str, &[(f64, f64)])> = chart
        .series
        .iter()
        .map(|s| (s.label.as_str(), s.points.as_slice()))
        .collect();
    assert_eq!(
        series,
        [
            ("gpipe-drop (cora)", &[(1.0, 25.0), (2.0, 50.0)][..]),
            ("gnnpipe (cora)", &[(1.0, 30.0), (2.0, 75.0)][..]),
        ]
    );
    assert_renders(&figures.last().unwrap().1);
}

#[test]
fn simulate_plot_writes_a_timeline_and_memory_bars_per_schedule() {
    let dir = scratch("simulate-plot");
    let out = pipegnn(&[
        "simulate",
        "scenarios/explicit-pipeline.yaml",
        "--schedule",
        "all",
        "--plot",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for schedule in ["1f1b", "gpipe"] {
        for figure in ["timeline", "memory"] {
            let path = dir.join(format!("{schedule}-{figure}.svg"));
            assert_svg(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        }
    }
}

#[test]
fn sweep_plot_draws_bubble_against_chunks_and_epoch_time_against_devices() {
    let dir = scratch("sweep-plot");
    let out = pipegnn(&[
        "sweep",
        "scenarios/explicit-pipeline.yaml",
        "--set",
        "schedule.chunks=1,2,4",
        "--set",
        "schedule.kind=gpipe,1f1b",
        "--set",
        "devices.0.count=4,8",
        "--plot",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for figure in ["sweep-bubble-vs-chunks", "sweep-epoch-vs-devices"] {
        let path = dir.join(format!("{figure}.svg"));
        assert_svg(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
}
