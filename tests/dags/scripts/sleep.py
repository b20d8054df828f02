import os
import time

open(os.path.join(os.environ["MLTRAIN_RUN_DIR"], "..", "sleep-started"), "w").close()
print("sleeping", flush=True)
time.sleep(120)
