"""What mtl_keras runs only on the JAX backend, behind backend-agnostic models: `meta_transfer_steps`
(`MetaTransferModel`'s stateless train and test steps). Nothing here is imported unless Keras runs
on JAX; like `mtl_keras.tensorflow_backend`, it imports only the library's leaves (`keras_private`,
`inputs`), never the models it serves.
"""
