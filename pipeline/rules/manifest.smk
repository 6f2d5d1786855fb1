rule manifest:
    """Annotations (WLASL v0.3, MS-ASL) -> canonical manifest, rejects and report."""
    input:
        wlasl_annotation=get_wlasl_annotation,
        code=code_files("manifest"),
    output:
        manifest=data_path("manifest", "manifest.parquet"),
        rejects=data_path("manifest", "rejects.parquet"),
        report=data_path("manifest", "report.json"),
    params:
        **stage_params(config, "manifest"),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        raw_dir=lambda wildcards, output: os.path.join(os.path.dirname(os.path.dirname(output.manifest)), "raw"),
    log:
        log_path("manifest.log"),
    benchmark:
        benchmark_path("manifest.tsv")
    shell:
        "python -m sldata manifest --params {PARAMS_FILE:q} --out-dir {params.out_dir:q} --raw-dir {params.raw_dir:q}"
        " > {log} 2>&1"
