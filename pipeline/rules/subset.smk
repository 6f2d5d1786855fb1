rule subset:
    """Manifest -> the class subset and splits of params `subset` (WLASL-k, MS-ASL-k, a class list)."""
    input:
        manifest=data_path("manifest", "manifest.parquet"),
    output:
        samples=data_path("subset", "samples.parquet"),
        label_map=data_path("subset", "label_map.json"),
        report=data_path("subset", "report.json"),
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.samples),
        dataset=SUBSET["dataset"],
        k=SUBSET["k"],
        classes=SUBSET["classes"],
        resplit=str(SUBSET["resplit"]["enabled"]).lower(),
        seed=SUBSET["resplit"]["seed"],
        train=SUBSET["resplit"]["fractions"]["train"],
        val=SUBSET["resplit"]["fractions"]["val"],
        test=SUBSET["resplit"]["fractions"]["test"],
    log:
        log_path("subset.log"),
    shell:
        "python -m sldata subset --manifest {input.manifest:q} --out-dir {params.out_dir:q}"
        " --dataset {params.dataset} --k {params.k} --classes={params.classes:q}"
        " --resplit {params.resplit} --resplit-seed {params.seed}"
        " --resplit-train {params.train} --resplit-val {params.val} --resplit-test {params.test}"
        " > {log} 2>&1"
