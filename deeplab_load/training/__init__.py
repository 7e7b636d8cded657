"""Training library: strategies (`strategy`), the trainers and D's fit loop (`steps`), class
statistics for the weighted CE (`class_weights`), stage 1, the LoAd hooks and map sets, the
hold-out, one run end to end (`run`) and run-dir safety (`safety/`). Import the submodules."""
