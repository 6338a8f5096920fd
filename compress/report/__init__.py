"""The report stage: accuracy, size and latency of each variant, per-layer plan and curvature,
spectrum, sharpness and parity, written as JSON, Markdown and one self-contained HTML page.

``load_report_inputs(...)`` reads the other commands' files into ``ReportInputs``;
``build_report(inputs, out_dir)`` writes the report (``compress.report.build``)."""
