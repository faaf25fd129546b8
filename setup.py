from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="recbole-flr",
    version="0.1.0",
    description="Factorised Latent Reasoning (FLR) for LLM-based sequential recommendation, as a RecBole plugin",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),
    include_package_data=True,  # properties/**/*.yaml, listed in MANIFEST.in: without them there are no defaults
    python_requires=">=3.10",
    install_requires=[
        "recbole==1.2.1",
        # The tested stack. The upper bound also keeps pip on a CPU-only machine from resolving a newer, CUDA build
        # of torch: install torch==2.13.0 first (README) and this line installs nothing more.
        "torch>=2.6,<=2.13.0",
        "transformers>=4.46,<6",
        "peft>=0.13",
        "numpy>=1.26",  # numpy 2 works: recbole_flr restores the aliases RecBole 1.2.1 reads
        # pandas 3's copy-on-write turns RecBole's in-place fillna into a no-op (tests/test_package.py)
        "pandas>=1.3,<3",
        "pyyaml>=5.1",
        "matplotlib>=3.5",  # explain and robustness figures, benchmark plots
    ],
    # gguf: llm_gguf_file (GGUF checkpoints through transformers); the tests write a tiny GGUF themselves
    # black and ruff: the formatter and linter that .ci/run checks (pinned: a new release must not turn CI red)
    extras_require={
        "test": ["pytest>=7", "gguf>=0.10.0", "black==26.10.1", "ruff==0.17.6", "hyperopt>=0.2.7"],
        "gguf": ["gguf>=0.10.0"],
        # run_hyper.py: RecBole's HyperTuning is built on hyperopt, which recbole 1.2.1 does not require
        "hyper": ["hyperopt>=0.2.7"],
    },
    scripts=["run_recbole_flr.py", "run_hyper.py"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
