"""The ablation study: LoAd against its control arms from one stage-1 model.

Modules: `arm_names` (the arms, their titles and `--arms` groups), `config` (AblationConfig),
`arms` (the control arms' training loops), `runner` (runs and resumes every arm per seed),
`report` (tables, intervals, plot). Driven by deeplab_load_tools/ablation.py.
"""
