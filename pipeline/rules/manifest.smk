rule manifest:
    """Annotations (WLASL v0.3, MS-ASL) -> canonical manifest, rejects and report."""
    input:
        wlasl_annotation=get_wlasl_annotation,
    output:
        manifest=data_path("manifest", "manifest.parquet"),
        rejects=data_path("manifest", "rejects.parquet"),
        report=data_path("manifest", "report.json"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        raw_dir=lambda wildcards, output: os.path.join(os.path.dirname(os.path.dirname(output.manifest)), "raw"),
        wlasl_enabled=str(SOURCES["wlasl"]["enabled"]).lower(),
        wlasl_local_path=SOURCES["wlasl"]["annotation"]["local_path"],
        wlasl_local_sha256=SOURCES["wlasl"]["annotation"]["local_sha256"],
        wlasl_url=SOURCES["wlasl"]["annotation"]["url"],
        wlasl_size=SOURCES["wlasl"]["annotation"]["size"],
        wlasl_sha256=SOURCES["wlasl"]["annotation"]["sha256"],
        wlasl_timeout_s=SOURCES["wlasl"]["annotation"]["timeout_s"],
        msasl_enabled=str(SOURCES["msasl"]["enabled"]).lower(),
        msasl_dir=SOURCES["msasl"]["dir"],
        msasl_splits=SOURCES["msasl"]["splits"],
        msasl_tolerance_s=SOURCES["msasl"]["max_time_frame_disagreement_s"],
    log:
        log_path("manifest.log"),
    benchmark:
        benchmark_path("manifest.tsv")
    shell:
        "python -m sldata manifest --out-dir {params.out_dir:q} --raw-dir {params.raw_dir:q}"
        " --wlasl-enabled {params.wlasl_enabled} --wlasl-local-path={params.wlasl_local_path:q}"
        " --wlasl-local-sha256={params.wlasl_local_sha256:q} --wlasl-url {params.wlasl_url:q}"
        " --wlasl-size {params.wlasl_size} --wlasl-sha256 {params.wlasl_sha256:q}"
        " --wlasl-timeout-s {params.wlasl_timeout_s}"
        " --msasl-enabled {params.msasl_enabled} --msasl-dir {params.msasl_dir:q}"
        " --msasl-splits {params.msasl_splits:q}"
        " --msasl-max-time-frame-disagreement-s {params.msasl_tolerance_s}"
        " > {log} 2>&1"
