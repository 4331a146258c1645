"""The build engine: the Builder interface that survey builders implement, the two-stage build
(standardize, partition) on Dask, and the Dask client set-up every parallel command shares."""
