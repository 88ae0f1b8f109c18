"""Import stand-in for SimpleITK on the GPU check's machine (scripts/gpu_check.sh puts it on PYTHONPATH only
where SimpleITK is not installed).

nnunetv2 imports SimpleITK when its trainer and predictor modules load (its image readers and preprocessor),
and so do blogrr-nnu's registration and image modules; nothing the GPU check measures calls it, and its
wheel (~53 MB) does not fit what may travel to that machine. Any use raises.
"""
GPU_CHECK_STAND_IN = True


def __getattr__(name: str):
    raise AttributeError(f"SimpleITK.{name}: SimpleITK is not installed here; this is the GPU check's import "
                         "stand-in (scripts/gpu_check_stubs), which only lets modules that import it load")
