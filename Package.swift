// swift-tools-version:6.0
import PackageDescription

/// Every target is compiled in Swift 6 language mode: complete concurrency checking.
let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "kalavara",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "master", targets: ["master"]),
        .executable(name: "volume", targets: ["volume"]),
        .executable(name: "kalavara-load", targets: ["kalavara-load"]),
        .executable(name: "kalavara", targets: ["kalavara"]),
        .executable(name: "kalavara-s3", targets: ["kalavara-s3"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // RocksDB's C API from Debian's librocksdb-dev, through a module map.
        .systemLibrary(
            name: "CRocksDB",
            pkgConfig: "rocksdb",
            providers: [.apt(["librocksdb-dev"])]
        ),
        // epoll(7), which Glibc's Swift module leaves out; used by the HTTP event loop.
        .systemLibrary(name: "CEpoll"),
        // The system's OpenSSL libcrypto (libssl-dev): SHA-256, HMAC-SHA256, MD5.
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // The system's OpenSSL libssl (libssl-dev): TLS for the HTTP server and client.
        .systemLibrary(name: "CLibSSL", pkgConfig: "libssl", providers: [.apt(["libssl-dev"])]),
        // zlib (zlib1g-dev): CRC-32.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The modules, each depending only on those below it:
        //   KalavaraS3 (the gateway: a client of the cluster)
        //   KalavaraCore (storage, cluster, master, volume, healing, security, status)
        //   KalavaraHTTP (server, client, router, parser: knows nothing of keys or volumes)
        //   KalavaraSupport (logging, metrics, digests, locks, background priority)
        .target(
            name: "KalavaraSupport",
            dependencies: [
                "CEpoll", "CLibCrypto", "CZlib",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "KalavaraHTTP",
            dependencies: ["KalavaraSupport", "CEpoll", "CLibSSL", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "KalavaraCore",
            dependencies: [
                "KalavaraHTTP", "KalavaraSupport", "CRocksDB", "CEpoll",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "KalavaraS3",
            dependencies: ["KalavaraCore", "KalavaraHTTP", "KalavaraSupport"],
            swiftSettings: strict
        ),
        .executableTarget(name: "master", dependencies: ["KalavaraCore"], swiftSettings: strict),
        .executableTarget(name: "volume", dependencies: ["KalavaraCore"], swiftSettings: strict),
        // The S3 gateway.
        .executableTarget(name: "kalavara-s3", dependencies: ["KalavaraS3"], swiftSettings: strict),
        // The operator's command line.
        .executableTarget(name: "kalavara", dependencies: [
            "KalavaraCore", "KalavaraHTTP", "KalavaraSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        // Load generator and measurement helpers for scripts/bench.
        .executableTarget(name: "kalavara-load", dependencies: [
            "KalavaraCore", "KalavaraHTTP", "KalavaraSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        // What the test targets share: skipping, or failing in CI, when a test's tools are missing.
        .target(name: "TestSupport", dependencies: ["KalavaraHTTP"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "KalavaraSupportTests", dependencies: ["KalavaraSupport", "CEpoll", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "KalavaraHTTPTests", dependencies: ["KalavaraHTTP", "KalavaraSupport", "TestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "KalavaraCoreTests", dependencies: ["KalavaraCore", "KalavaraHTTP", "KalavaraSupport", "TestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "KalavaraS3Tests", dependencies: [
            "KalavaraS3", "KalavaraCore", "KalavaraHTTP", "KalavaraSupport", "TestSupport",
        ], swiftSettings: strict),
        // Tests that start the real binaries on 127.0.0.1 and talk HTTP to them.
        .testTarget(name: "IntegrationTests", dependencies: ["KalavaraCore", "KalavaraHTTP", "KalavaraS3", "KalavaraSupport", "TestSupport"],
                    swiftSettings: strict),
    ]
)
