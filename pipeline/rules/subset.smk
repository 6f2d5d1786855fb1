rule subset:
    """Manifest -> the class subset and splits of params `subset` (WLASL-k, MS-ASL-k, a class list)."""
    input:
        manifest=data_path("manifest", "manifest.parquet"),
        code=code_files("subset"),
    output:
        samples=data_path("subset", "samples.parquet"),
        label_map=data_path("subset", "label_map.json"),
        report=data_path("subset", "report.json"),
    params:
        **stage_params(config, "subset"),
        out_dir=lambda wildcards, output: os.path.dirname(output.samples),
    log:
        log_path("subset.log"),
    shell:
        "python -m sldata subset --params {PARAMS_FILE:q} --manifest {input.manifest:q} --out-dir {params.out_dir:q}"
        " > {log} 2>&1"
