"""Microsoft.Compute: the size catalogue and the image marketplace (read-only views); virtual
machines register here too."""

# api-versions Microsoft.Compute answers to (newest first: templates use `apiVersions[0]`).
API_VERSIONS = ("2024-11-01", "2024-07-01", "2024-03-01", "2023-09-01", "2023-07-01", "2023-03-01", "2022-11-01",
                "2022-08-01", "2022-03-01", "2021-11-01", "2021-07-01", "2021-04-01", "2021-03-01", "2020-12-01",
                "2020-06-01", "2019-12-01", "2019-07-01", "2019-03-01", "2018-10-01", "2018-06-01", "2017-12-01",
                "2017-03-30", "2016-04-30-preview", "2016-03-30", "2015-06-15")
SKU_API_VERSIONS = ("2021-07-01", "2019-04-01", "2017-09-01")
NAMESPACE = "Microsoft.Compute"
