"""Training time: the Keras callback (`callback`, a thin adapter), the Keras-free run session
(`session`), the recorder that writes off the training thread or to the spool (`recorder`), the
guard that sees `fit` end however it ends (`fitguard`, `exits`), what is read from Keras objects
and the machine (`keras_objects`, `environment`), the checkpoint recorder (`checkpoint_recorder`)
and the warnings shown while training (`notices`).

These modules import the store and the shared modules at the top of `tracker`, never the reverse.
Only `callback` imports Keras.
"""
